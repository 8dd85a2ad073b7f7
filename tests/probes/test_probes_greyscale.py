"""Every probe on 1-channel (greyscale) images (issue 20, item 7): shape and range kept,
reversal is 1 - x, greyscale is the identity and says it is skipped, Fourier stylisation
keeps the style's amplitude, AdaIN (Huang & Belongie 2017, Eq. 8) transfers a 1-channel
feature's mean and std exactly as by hand, and the AdaIN network stylises grey images."""

from __future__ import annotations

import pytest
import torch

from robustlens.errors import UserError
from robustlens.probes.adain import AdaIN, adain
from robustlens.probes.transforms import (
    PROBES,
    ProbeContext,
    amplitude_phase_swap,
    get_probe,
    greyscale,
    invert,
)


def _grey(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _context(x: torch.Tensor) -> ProbeContext:
    masks = torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.bool)
    masks[:, 4:12, 5:11] = True
    return ProbeContext(masks=masks, labels=torch.arange(x.shape[0]) % 2, style_pool=_grey(6, x.shape[-1], seed=1),
                        pool_labels=torch.arange(6) % 2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(PROBES.names()))
def test_every_probe_keeps_a_grey_image_grey_and_in_range(name):
    x = _grey()
    probe = get_probe(name)
    levels = [lv for lv in probe.levels if lv is not None] or [None]
    for level in (levels[0], levels[-1]):
        out = probe.apply(x, level, _context(x))
        assert out.shape == x.shape and out.dtype == x.dtype, name
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0, name
    # the trivial level of a graded probe leaves the image as it is
    if probe.level_name is not None:
        assert torch.allclose(probe.apply(x, levels[0], _context(x)), x, atol=1e-6), name


def test_reversal_is_one_minus_x_per_channel():
    x = _grey()
    assert torch.equal(invert(x), 1.0 - x)
    assert torch.equal(get_probe("invert").apply(x), 1.0 - x)
    assert get_probe("invert").skip_reason(1) is None


def test_greyscale_of_grey_is_the_identity_and_reported_skipped():
    x = _grey()
    assert torch.equal(greyscale(x), x)
    probe = get_probe("greyscale")
    assert probe.skip_reason(1) == "the data is already greyscale"
    assert probe.skip_reason(3) is None
    # every other probe applies to grey images
    assert [n for n in PROBES.names() if get_probe(n).skip_reason(1)] == ["greyscale"]
    # on colour images it is BT.601 luma on every channel, by hand for one pixel
    rgb = torch.tensor([0.2, 0.6, 1.0]).view(1, 3, 1, 1)
    assert torch.allclose(greyscale(rgb), torch.full((1, 3, 1, 1), 0.299 * 0.2 + 0.587 * 0.6 + 0.114 * 1.0))


def test_fourier_stylisation_of_grey_images_takes_the_styles_amplitude():
    x, style = _grey(2, 16, 0), _grey(2, 16, 5)
    out = amplitude_phase_swap(x, style).double()
    assert torch.allclose(torch.fft.fft2(out).abs(), torch.fft.fft2(style.double()).abs(), atol=1e-9)
    assert torch.allclose(torch.fft.fft2(out).angle(), torch.fft.fft2(x.double()).angle(), atol=1e-6)


def test_adain_on_one_channel_matches_the_hand_computation():
    content = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 1, 2, 2)
    style = torch.tensor([2.0, 4.0, 6.0, 8.0], dtype=torch.float64).view(1, 1, 2, 2)
    # mu(c) = 2.5, var(c) = 5/3 (unbiased); mu(s) = 5, var(s) = 20/3: sigma(s) / sigma(c) = 2,
    # so with eps = 0 AdaIN(c, s) = 2 (c - 2.5) + 5 = s exactly
    assert torch.allclose(adain(content, style, eps=0.0), style, atol=1e-12)
    eps = 1e-5
    by_hand = (content - 2.5) / (5 / 3 + eps) ** 0.5 * (20 / 3 + eps) ** 0.5 + 5.0
    assert torch.allclose(adain(content, style, eps=eps), by_hand, atol=1e-12)
    out = adain(content, style, eps=0.0)
    assert float(out.mean()) == pytest.approx(5.0) and float(out.std()) == pytest.approx(float(style.std()))


@pytest.fixture(scope="module")
def net():
    """The AdaIN network with random weights (the plumbing, not the look); built once (3 s)."""
    torch.manual_seed(0)
    return AdaIN().eval()


def test_adain_network_stylises_grey_images_as_grey_rgb_and_returns_the_luma(net):
    x, style = _grey(2, 16, 0), _grey(2, 16, 3)
    out = net.stylize(x, style, alpha=0.5)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    rgb = net.stylize(x.expand(-1, 3, -1, -1), style.expand(-1, 3, -1, -1), alpha=0.5)
    assert torch.allclose(out, greyscale(rgb)[:, :1], atol=1e-6)
    with pytest.raises(UserError, match="1- or 3-channel"):
        net.stylize(torch.rand(1, 2, 16, 16), torch.rand(1, 2, 16, 16))
    with pytest.raises(UserError, match="1- or 3-channel"):
        net.stylize(x[:1], torch.rand(1, 3, 16, 16))


def test_stylize_probe_with_adain_on_grey_images(net):
    x = _grey(2, 16, 0)
    ctx = _context(x)
    ctx.adain = net
    out = get_probe("stylize").with_params(method="adain").apply(x, None, ctx)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
