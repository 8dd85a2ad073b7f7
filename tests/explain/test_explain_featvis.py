"""Filter grids and activation maximisation."""

from __future__ import annotations

import pytest
import torch

from helpers_explain import small_model
from robustlens.errors import UserError
from robustlens.explain.featvis import (
    ImageParam,
    channel_activation,
    filter_grid,
    parse_featvis_spec,
    random_transform,
    visualize_channels,
)


def test_filter_grid_normalised_per_filter(tmp_path):
    model = small_model(dtype=torch.float32)
    f = filter_grid(model, tmp_path / "f.png")
    assert f.shape == (8, 3, 3, 3)
    flat = f.flatten(1)
    assert torch.allclose(flat.min(1).values, torch.zeros(8)) and torch.allclose(flat.max(1).values, torch.ones(8))
    assert (tmp_path / "f.png").stat().st_size > 500


def test_visualisation_raises_the_channel_and_is_seeded(tmp_path):
    model = small_model(dtype=torch.float32)
    chans = [0, 5, 9]
    imgs = visualize_channels(model, "body.8", chans, size=16, steps=25, seed=3, transforms=False, path=tmp_path / "v.png")
    assert imgs.shape == (3, 3, 16, 16) and imgs.min() >= 0 and imgs.max() <= 1
    start = ImageParam(3, 3, 16, generator=torch.Generator().manual_seed(3))().detach()
    after = channel_activation(model, "body.8", imgs, chans).diag()
    before = channel_activation(model, "body.8", start, chans).diag()
    assert (after > before).all()
    a = visualize_channels(model, "body.8", chans, size=16, steps=4, seed=3)
    b = visualize_channels(model, "body.8", chans, size=16, steps=4, seed=3)
    c = visualize_channels(model, "body.8", chans, size=16, steps=4, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    pixel = visualize_channels(model, "fc", [1], size=16, steps=5, param="pixel", decorrelate=False, transforms=False)
    assert pixel.shape == (1, 3, 16, 16)
    assert (tmp_path / "v.png").exists()
    assert all(p.requires_grad for p in model.parameters())


def test_fourier_parameterisation_and_transforms():
    p = ImageParam(2, 3, 20, generator=torch.Generator().manual_seed(0))
    img = p()
    assert img.shape == (2, 3, 20, 20) and 0 < float(img.min()) and float(img.max()) < 1
    out = random_transform(img, torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 44, 44)
    ident = random_transform(img, torch.Generator().manual_seed(0), pad=0, jitter=())
    assert ident.shape == img.shape


def test_bad_input():
    model = small_model(dtype=torch.float32)
    with pytest.raises(UserError, match="closest"):
        visualize_channels(model, "body.88", [0], steps=1)
    with pytest.raises(UserError, match="channels"):
        visualize_channels(model, "body.8", [99], size=16, steps=1)
    assert parse_featvis_spec("body.8:0, body.12:3") == [("body.8", 0), ("body.12", 3)]
    with pytest.raises(UserError):
        parse_featvis_spec("body.8")
