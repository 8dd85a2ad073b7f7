"""The paper's display (3-std clipping), overlays and grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlens.errors import UserError
from robustlens.explain.render import display_map, image_grid, overlay, saliency_grid


def test_display_clips_at_three_std():
    a = np.zeros((1, 10, 10))
    a[0, 0, 0] = 100.0  # one outlier
    a[0, 1, :] = 1.0
    s = display_map(a, "signed")
    bound = 3 * np.sqrt(np.mean(a[0] ** 2))
    assert s[0, 0] == 1.0 and s[1, 0] == pytest.approx(1.0 / bound)
    g = display_map(np.abs(a), "abs")
    assert g.min() >= 0 and g.max() == 1.0
    rgb = display_map(np.random.default_rng(0).normal(size=(3, 8, 8)), "rgb")
    assert rgb.shape == (8, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert np.all(display_map(np.zeros((3, 4, 4)), "signed") == 0)
    with pytest.raises(UserError):
        display_map(a, "fancy")


def test_overlay_and_grids(tmp_path):
    img = torch.rand(2, 3, 12, 12)
    maps = {"vanilla / STD": torch.randn(2, 3, 12, 12), "vanilla / ADV": torch.randn(2, 3, 12, 12)}
    ov = overlay(img[0], maps["vanilla / STD"][0])
    assert ov.shape == (12, 12, 3) and 0 <= ov.min() and ov.max() <= 1
    p = saliency_grid(img, maps, tmp_path / "g.png", row_labels=["a", "b"], title="t")
    assert p.stat().st_size > 1000
    saliency_grid(img, maps, tmp_path / "o.png", mode="abs", overlay_maps=True)
    image_grid(img, tmp_path / "i.png", labels=["x", "y"])
    with pytest.raises(UserError, match="maps"):
        saliency_grid(img, {"bad": torch.randn(3, 3, 12, 12)}, tmp_path / "b.png")
