"""Transformations against independent implementations (scipy, kornia) and known properties."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as nd
import torch

from robustlens.errors import UserError
from robustlens.probes import transforms as T


@pytest.fixture()
def x() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 3, 13, 15, generator=g)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("mode", ["nearest", "reflect", "mirror"])
@pytest.mark.parametrize("repeats", [1, 3])
def test_median_equals_scipy_exactly(x, k, mode, repeats):
    ref = x.numpy()
    for _ in range(repeats):
        ref = nd.median_filter(ref, size=(1, 1, k, k), mode=mode)
    ours = T.median_filter(x, k, repeats, mode, chunk=4)
    assert np.array_equal(ours.numpy(), ref)


def test_median_quantised_ties_and_identity(x):
    q = (x * 4).round() / 4  # many ties
    ref = nd.median_filter(nd.median_filter(q.numpy(), size=(1, 1, 3, 3), mode="nearest"), size=(1, 1, 3, 3), mode="nearest")
    assert np.array_equal(T.median_filter(q, 3, 2).numpy(), ref)
    assert torch.equal(T.median_filter(x, 3, 0), x)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_blur_matches_scipy_and_kornia(x, sigma, backend):
    kornia = pytest.importorskip("kornia")
    ours = T.gaussian_blur(x, sigma, 7, backend=backend)
    ref_k = kornia.filters.gaussian_blur2d(x, (7, 7), (sigma, sigma), border_type="reflect")
    ref_s = nd.gaussian_filter(x.double().numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", radius=(0, 0, 3, 3))
    assert (ours - ref_k).abs().max().item() < 1e-5
    assert np.abs(ours.double().numpy() - ref_s).max() < 1e-5


def test_blur_sigma_zero_is_identity_and_sums_preserved(x):
    assert torch.equal(T.gaussian_blur(x, 0.0), x)
    c = torch.full((1, 1, 9, 9), 0.3)
    assert torch.allclose(T.gaussian_blur(c, 1.5, backend="torch"), c, atol=1e-6)


def test_fourier_trivial_radius_unchanged(x):
    assert torch.allclose(T.lowpass(x, 1.5), x, atol=1e-6)
    assert torch.allclose(T.highpass(x, 0.0), x, atol=1e-6)
    assert torch.allclose(T.lowpass(x, float("inf"), mask="gaussian"), x, atol=1e-6)
    assert torch.allclose(T.highpass(x, 0.0, mask="gaussian"), x, atol=1e-6)


def test_fourier_lowpass_zero_keeps_mean_and_highpass_removes_low(x):
    lo = T.fourier_filter(x, 0.0, "lowpass", clip=False)
    assert torch.allclose(lo, x.mean((2, 3), keepdim=True).expand_as(x), atol=1e-6)
    # a pure low-frequency pattern disappears under a high-pass above its radius (mean kept)
    h, w = 16, 16
    yy = torch.arange(h).view(-1, 1).float()
    img = (0.5 + 0.2 * torch.cos(2 * np.pi * yy / h)).expand(h, w).reshape(1, 1, h, w).repeat(1, 3, 1, 1)
    hi = T.highpass(img, 0.5)
    assert torch.allclose(hi, torch.full_like(img, 0.5), atol=1e-6)


def test_stylize_keeps_content_phase_and_style_amplitude(x):
    content, style = x[:3].double(), x[3:].double()  # float64 throughout: checks the maths, not rounding
    out = T.amplitude_phase_swap(content, style).double()
    fo, fc, fs = torch.fft.fft2(out), torch.fft.fft2(content.double()), torch.fft.fft2(style.double())
    assert torch.allclose(fo.abs(), fs.abs(), atol=1e-8)
    nz = (fc.abs() > 1e-6) & (fs.abs() > 1e-6)
    dphase = torch.angle(fo * fc.conj())  # phase difference, wrapped
    assert dphase[nz].abs().max().item() < 1e-6


def test_stylize_probe_seeded_and_other_class(x):
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    idx = T.draw_styles(6, 6, torch.Generator().manual_seed(3), labels, labels)
    assert bool((labels[idx] != labels).all())
    ctx = lambda: T.ProbeContext(style_pool=x, labels=labels, pool_labels=labels, generator=torch.Generator().manual_seed(1))
    a = T.get_probe("stylize").apply(x, None, ctx())
    b = T.get_probe("stylize").apply(x, None, ctx())
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1


def test_colour_probes(x):
    assert torch.allclose(T.invert(T.invert(x)), x)
    g = T.greyscale(x)
    assert torch.allclose(g[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2], atol=1e-6)
    assert torch.equal(g[:, 0], g[:, 2])


def test_silhouette_and_edges_from_masks(x):
    m = torch.zeros(6, 13, 15, dtype=torch.bool)
    m[:, 3:9, 4:11] = True
    s = T.silhouette(x, m)
    assert torch.equal(s[:, 0] == 0, m) and s.shape == x.shape
    e = T.edges(x, m)
    outline = m.clone()
    outline[:, 4:8, 5:10] = False
    assert torch.equal(e[:, 1] == 0, outline)
    # without masks: a vertical step gives its strongest edge at the step
    img = torch.zeros(1, 3, 8, 8)
    img[..., 4:] = 1
    e2 = T.edges(img)
    assert e2[0, 0, 4, 3:5].min() < e2[0, 0, 4, 0] and e2.shape == img.shape
    # polarity "light": white shape / lines on black, exactly the inverse image
    assert torch.equal(T.silhouette(x, m, "light"), 1 - s) and torch.equal(T.silhouette(x, m, "light")[:, 2], m.float())
    assert torch.equal(T.edges(x, m, "light"), 1 - e) and torch.allclose(T.edges(img, polarity="light"), 1 - e2, atol=1e-6)
    light = T.get_probe("edges").with_params(polarity="light")
    assert torch.equal(light.apply(x, None, T.ProbeContext(masks=m)), 1 - e)
    for fn in (T.silhouette, T.edges):
        with pytest.raises(UserError, match="polarity must be 'dark'"):
            fn(x, m, "white")


def test_registry_and_bad_inputs(x):
    with pytest.raises(UserError, match="valid probes: blur"):
        T.get_probe("sharpen")
    for k in (0, -3, 4, 2.0):
        with pytest.raises(UserError, match="kernel_size"):
            T.median_filter(x, k)
        with pytest.raises(UserError, match="kernel_size"):
            T.gaussian_blur(x, 1.0, k)
    with pytest.raises(UserError, match="sigma"):
        T.gaussian_blur(x, -0.5)
    with pytest.raises(UserError, match="empty"):
        T.stylize(x, x[:0])
    with pytest.raises(UserError, match="empty"):
        T.stylize(x, None)
    with pytest.raises(UserError, match="style pool images are"):
        T.stylize(x, torch.rand(4, 3, 8, 8))
    with pytest.raises(UserError, match="masks"):
        T.silhouette(x, None)
    with pytest.raises(UserError, match="unknown parameter"):
        T.get_probe("blur").with_params(kernel=5)
    with pytest.raises(UserError, match="repeats"):
        T.median_filter(x, 3, -1)
