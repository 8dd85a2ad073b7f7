"""The saliency stage leaves out of the object share the methods whose share is 1 by
construction (a map exactly zero off the object for every model), and only those."""

from __future__ import annotations

import torch

from robustlens.study.stages.saliency import _left_out


def test_methods_zero_off_the_object_for_every_model_are_left_out():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True
    x = torch.rand(2, 3, 8, 8) * masks.unsqueeze(1)  # black background
    inside = masks.unsqueeze(1).float()
    maps = {
        "ig": {"std": torch.randn(2, 3, 8, 8) * inside, "adv": torch.randn(2, 3, 8, 8) * inside},
        "vanilla": {"std": torch.randn(2, 3, 8, 8), "adv": torch.randn(2, 3, 8, 8) * inside},  # one model looks off it
    }
    out = _left_out(x, masks, maps)
    assert set(out) == {"ig"} and "by construction" in out["ig"]
    assert _left_out(x, None, maps) == {}
