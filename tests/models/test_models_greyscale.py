"""Greyscale inputs (issue 20): every family takes ``in_channels``; a 1-channel model has a
1-channel normalisation; checkpoints round-trip with ``in_channels=1``."""

from __future__ import annotations

import pytest
import torch

from robustlens.errors import UserError
from robustlens.models import available, create
from robustlens.models.base import IMAGENET_MEAN, IMAGENET_STD
from robustlens.models.checkpoint import load_checkpoint, save_checkpoint

SMALL = {"small_cnn": {"width": 8}, "preact_resnet18": {}, "resnet18": {}, "alexnet": {"hidden": 32},
         "alexnet_bn": {"hidden": 32}, "wrn16_4": {}, "cifar_resnet50": {}}


def test_every_family_takes_in_channels() -> None:
    for name in available():
        with torch.device("meta"):
            m = create(name, 10, in_channels=1)
        assert m.first_conv.in_channels == 1 and m.normalize.mean.numel() == 1, name


@pytest.mark.parametrize("name", sorted(SMALL))
def test_one_channel_forward_and_checkpoint(tmp_path, name: str) -> None:
    torch.manual_seed(0)
    m = create(name, 10, in_channels=1, **SMALL[name]).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        before = m(x)
    path = save_checkpoint(tmp_path / "g.safetensors", m)
    again, sc = load_checkpoint(path)
    assert sc["model_kwargs"]["in_channels"] == 1 and len(sc["normalize"]["mean"]) == 1
    with torch.no_grad():
        assert float((again(x) - before).abs().max()) < 1e-5


def test_one_channel_statistics() -> None:
    m = create("resnet18", 10, in_channels=1)  # ImageNet's 3-channel defaults -> their means
    assert m.normalize.mean.item() == pytest.approx(sum(IMAGENET_MEAN) / 3)
    assert m.normalize.std.item() == pytest.approx(sum(IMAGENET_STD) / 3)
    m = create("small_cnn", 10, in_channels=1, mean=[0.1307], std=[0.3081])  # given per channel: kept
    assert m.normalize.to_dict() == {"mean": [pytest.approx(0.1307)], "std": [pytest.approx(0.3081)]}
    x = torch.full((1, 1, 8, 8), 0.1307 + 0.3081)
    assert torch.allclose(m.normalize(x), torch.ones_like(x))
    with pytest.raises(UserError, match="2 mean/std values for a 1-channel input"):
        create("small_cnn", 10, in_channels=1, mean=[0.1, 0.2], std=[0.3, 0.3])
    with pytest.raises(UserError, match="in_channels: expected a positive integer"):
        create("small_cnn", 10, in_channels=0)
