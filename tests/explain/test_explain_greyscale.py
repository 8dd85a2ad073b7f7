"""Feature visualisation, filter display and saliency rendering of a 1-channel (greyscale)
model (issue 20, item 7): filters are grey images min-max scaled per filter, Lucid's RGB
colour decorrelation falls back to the identity, channel visualisations are 1-channel and
raise their channel, and every renderer draws grey maps."""

from __future__ import annotations

import numpy as np
import torch

from robustlens.explain.featvis import ImageParam, channel_activation, filter_grid, first_layer_filters, visualize_channels
from robustlens.explain.render import display_map, image_grid, image_hwc, overlay, saliency_grid
from robustlens.models import create


def _grey_model(seed: int = 0):
    torch.manual_seed(seed)
    return create("small_cnn", 10, in_channels=1, width=8).eval()


def test_first_layer_filters_of_a_grey_model_are_grey_and_scaled_per_filter(tmp_path, one_thread):
    model = _grey_model()
    w = model.first_conv.weight.detach()
    f = filter_grid(model, tmp_path / "f.png")
    assert f.shape == (8, 1, 3, 3)
    for k in range(8):  # by hand: (w - min) / (max - min) of each filter
        assert torch.allclose(f[k], (w[k] - w[k].min()) / (w[k].max() - w[k].min()), atol=1e-6)
    assert torch.equal(first_layer_filters(model.first_conv), f)
    assert (tmp_path / "f.png").stat().st_size > 500


def test_colour_decorrelation_is_the_identity_for_one_channel():
    grey = ImageParam(2, 1, 16, decorrelate=True, generator=torch.Generator().manual_seed(0))
    plain = ImageParam(2, 1, 16, decorrelate=False, generator=torch.Generator().manual_seed(0))
    assert not grey.decorrelate
    assert torch.equal(grey(), plain())
    # on RGB the same raw spectrum is mixed by the colour matrix
    rgb = ImageParam(2, 3, 16, decorrelate=True, generator=torch.Generator().manual_seed(0))
    rgb_plain = ImageParam(2, 3, 16, decorrelate=False, generator=torch.Generator().manual_seed(0))
    assert rgb.decorrelate and not torch.allclose(rgb(), rgb_plain())
    pixel = ImageParam(1, 1, 16, param="pixel", generator=torch.Generator().manual_seed(0))
    assert torch.equal(pixel(), torch.sigmoid(pixel.raw))


def test_channel_visualisation_of_a_grey_model_is_grey_and_raises_the_channel(one_thread):
    model = _grey_model()
    chans = [0, 3]
    imgs = visualize_channels(model, "body.8", chans, size=16, steps=20, seed=1, transforms=False)
    assert imgs.shape == (2, 1, 16, 16) and float(imgs.min()) >= 0 and float(imgs.max()) <= 1
    start = ImageParam(2, 1, 16, generator=torch.Generator().manual_seed(1))().detach()
    assert (channel_activation(model, "body.8", imgs, chans).diag() > channel_activation(model, "body.8", start, chans).diag()).all()
    jittered = visualize_channels(model, "body.8", [1], size=16, steps=2, seed=1)
    assert jittered.shape == (1, 1, 16, 16)


def test_renderers_draw_grey_images_and_maps(tmp_path):
    img = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    attr = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    hwc = image_hwc(img[0])
    assert hwc.shape == (12, 12, 3) and np.array_equal(hwc[..., 0], hwc[..., 2])
    assert np.allclose(hwc[..., 0], img[0, 0].double().numpy())
    rgb = display_map(attr[0], "rgb")
    assert rgb.shape == (12, 12, 3) and np.array_equal(rgb[..., 0], rgb[..., 1]) and 0 <= rgb.min() <= rgb.max() <= 1
    # one channel: the signed map is the channel itself, clipped at 3 RMS
    a = attr[0, 0].double().numpy()
    assert np.allclose(display_map(attr[0], "signed"), np.clip(a / (3 * np.sqrt(np.mean(a**2))), -1, 1))
    assert display_map(attr[0], "abs").shape == (12, 12)
    assert overlay(img[0], attr[0]).shape == (12, 12, 3)
    saliency_grid(img, {"vanilla": attr}, tmp_path / "s.png", mode="rgb")
    saliency_grid(img, {"vanilla": attr}, tmp_path / "o.png", overlay_maps=True)
    image_grid(img, tmp_path / "g.png", labels=["a", "b"])
    assert all((tmp_path / f).stat().st_size > 500 for f in ("s.png", "o.png", "g.png"))
