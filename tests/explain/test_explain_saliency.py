"""Saliency methods against captum, completeness, guided backprop on four ReLU styles, errors."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from helpers_explain import relu_variants, small_model, procedural_test_set, trained_model
from robustlens.errors import UserError
from robustlens.explain.saliency import (
    IG_METHODS,
    grad_cam,
    guided_backprop,
    ig_path_average,
    ig_quadrature,
    integrated_gradients,
    loss_gradient,
    saliency,
    smoothgrad,
    vanilla_gradient,
)

captum_attr = pytest.importorskip("captum.attr")
warnings.filterwarnings("ignore", module="captum")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


@pytest.fixture(scope="module")
def setup():
    model = small_model()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 32, 32, generator=g, dtype=torch.float64)
    return model, x, [1, 2, 3, 9]


def test_vanilla_matches_captum(setup):
    model, x, t = setup
    ref = captum_attr.Saliency(model).attribute(x, target=t, abs=False)
    assert rel_err(vanilla_gradient(model, x, t, internal_batch_size=3), ref) < 1e-4


@pytest.mark.parametrize("method", IG_METHODS)
def test_integrated_gradients_matches_captum(setup, method):
    model, x, t = setup
    steps = 16
    ours = integrated_gradients(model, x, t, steps=steps, method=method, internal_batch_size=7)
    ref = captum_attr.IntegratedGradients(model).attribute(x, target=t, n_steps=steps, method=method)
    if method == "riemann_trapezoid":
        # captum 0.9 weights the trapezoid nodes by 1/n (halved at the ends) instead of 1/(n-1).
        ours = ours * (steps - 1) / steps
    assert rel_err(ours, ref) < 1e-4


def test_guided_backprop_matches_captum(setup):
    model, x, t = setup
    ref = captum_attr.GuidedBackprop(model).attribute(x, target=t)
    assert rel_err(guided_backprop(model, x, t, internal_batch_size=3), ref) < 1e-4


def test_smoothgrad_matches_captum_saliency_on_same_noise(setup):
    model, x, t = setup
    n = 6
    g = torch.Generator().manual_seed(5)
    noise = torch.randn((n, *x.shape), generator=g, dtype=x.dtype)
    ours = smoothgrad(model, x, t, n_samples=n, noise=noise, internal_batch_size=5)
    flat = x.flatten(1)
    sigma = (0.2 * (flat.max(1).values - flat.min(1).values)).view(-1, 1, 1, 1)
    sal = captum_attr.Saliency(model)
    ref = sum(sal.attribute(x + sigma * noise[s], target=t, abs=False) for s in range(n)) / n
    assert rel_err(ours, ref) < 1e-4
    # the generator path draws the same noise, sample by sample, whatever the chunking
    g1 = torch.Generator().manual_seed(5)
    same = smoothgrad(model, x, t, n_samples=n, generator=g1, internal_batch_size=64)
    assert rel_err(same, ref) < 1e-10


def test_smoothgrad_over_guided_matches_captum_noise_tunnel_semantics(setup):
    model, x, t = setup
    n = 3
    noise = torch.randn((n, *x.shape), generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    ours = smoothgrad(model, x, t, base="guided", n_samples=n, noise=noise, noise_level=0.1, squared=True, internal_batch_size=2)
    sigma = (0.1 * (x.flatten(1).max(1).values - x.flatten(1).min(1).values)).view(-1, 1, 1, 1)
    gb = captum_attr.GuidedBackprop(model)
    ref = sum(gb.attribute(x + sigma * noise[s], target=t) ** 2 for s in range(n)) / n
    assert rel_err(ours, ref) < 1e-4


def test_gradcam_matches_captum(setup):
    model, x, t = setup
    layer = model.body[12]  # the last conv
    ref = captum_attr.LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
    ref = captum_attr.LayerAttribution.interpolate(ref, (32, 32), interpolate_mode="bilinear")
    ours = grad_cam(model, x, t, internal_batch_size=3)
    assert ours.shape == x.shape
    assert rel_err(ours[:, :1], ref) < 1e-4
    assert torch.equal(ours[:, 0], ours[:, 2])
    assert torch.equal(grad_cam(model, x, t, layer="body.12"), ours)


def test_ig_completeness_within_one_percent():
    model = trained_model()
    x = procedural_test_set().float()[:6].double()
    t = model(x).argmax(1)
    with torch.no_grad():
        gap = model(x).gather(1, t[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, t[:, None])[:, 0]
    attr, delta = integrated_gradients(model, x, t, steps=64, method="gausslegendre", return_delta=True)
    assert torch.allclose(attr.flatten(1).sum(1) - gap, delta, atol=1e-9)
    # every image, relative to its logit gap (at least 1: a near-zero gap, which the trained
    # model's weights can give under another thread count, would make any error look large)
    assert float((delta.abs() / gap.abs().clamp_min(1.0)).max()) < 0.01, (delta, gap)
    _, delta_mid = integrated_gradients(model, x, t, steps=64, method="riemann_middle", return_delta=True)
    assert float(delta_mid.abs().sum() / gap.abs().sum()) < 0.01, (delta_mid, gap)  # over the batch


def test_ig_path_average_is_ig_without_input_factor(setup):
    model, x, t = setup
    base = torch.full_like(x, 0.5)
    avg = ig_path_average(model, x, t, baseline=0.5, steps=8)
    ig = integrated_gradients(model, x, t, baseline=base, steps=8)
    assert torch.allclose(ig, (x - base) * avg, atol=1e-12)
    assert not torch.allclose(ig, avg)


def test_quadrature_rules_integrate_polynomials():
    for method in IG_METHODS:
        a, w = ig_quadrature(20, method)
        assert abs(sum(w) - 1) < 1e-12
        approx = sum(wi * ai**2 for ai, wi in zip(a, w))
        tol = 1e-12 if method == "gausslegendre" else 0.06
        assert abs(approx - 1 / 3) < tol, method


def test_loss_gradient_is_paper_eq9(setup):
    model, x, t = setup
    xi, ti = x[:1], t[0]
    jac = torch.autograd.functional.jacobian(lambda z: model(z)[0], xi)[:, 0]  # (K, C, H, W)
    p = F.softmax(model(xi), 1)[0].detach()
    expected = -jac[ti] + (p.view(-1, 1, 1, 1) * jac).sum(0)
    assert torch.allclose(loss_gradient(model, xi, ti)[0], expected, atol=1e-10)


def test_guided_backprop_same_for_four_relu_styles():
    nets = relu_variants()
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    maps = [guided_backprop(m, x, [0, 3, 4]) for m in nets]
    for m in maps[1:]:
        assert torch.equal(m, maps[0])
    # and it differs from the vanilla gradient (the guided rule did act)
    assert not torch.allclose(maps[0], vanilla_gradient(nets[3], x, [0, 3, 4]))
    ref = captum_attr.GuidedBackprop(nets[0]).attribute(x, target=[0, 3, 4])
    assert rel_err(maps[0], ref) < 1e-4
    # outside the call the functional ReLU behaves normally again
    y = torch.randn(5, requires_grad=True)
    (g,) = torch.autograd.grad(torch.relu(y).sum() * -1, y)
    assert torch.equal(g, -(y > 0).double().to(g.dtype))


def test_chunking_does_not_change_results(setup):
    model, x, t = setup
    for method, kw in [("ig", {"steps": 5}), ("smoothgrad", {"n_samples": 3, "noise": torch.zeros(3, *x.shape, dtype=x.dtype)})]:
        a = saliency(model, x, t, method, internal_batch_size=1, **kw)
        b = saliency(model, x, t, method, internal_batch_size=64, **kw)
        assert torch.allclose(a, b, atol=1e-12), method


def test_one_signature_and_shapes(setup):
    model, x, t = setup
    model.train()
    try:
        for m in ("vanilla", "loss", "guided", "ig", "ig_path_average", "gradcam"):
            kw = {"steps": 4} if m.startswith("ig") else {}
            assert saliency(model, x, t, m, **kw).shape == x.shape
        assert model.training  # mode left as it is
    finally:
        model.eval()
    assert saliency(model, x, 3, "smoothgrad", n_samples=2, base="ig", steps=3).shape == x.shape
    assert torch.equal(saliency(model, x, torch.tensor([1, 2, 3, 9])), saliency(model, x, t))
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target": 10}, "out of range"),
        ({"target": -1}, "out of range"),
        ({"target": [1, 2]}, "2 targets for 4 images"),
        ({"method": "nope"}, "unknown saliency method"),
        ({"method": "ig", "steps": 0}, "steps"),
        ({"method": "smoothgrad", "n_samples": 0}, "n_samples"),
        ({"method": "gradcam", "layer": "body.99"}, "closest"),
        ({"method": "ig", "method_": None}, "unexpected keyword"),
    ],
)
def test_bad_input(setup, kwargs, match):
    model, x, _ = setup
    kwargs = dict(kwargs)
    target = kwargs.pop("target", 1)
    method = kwargs.pop("method", "vanilla")
    with pytest.raises(UserError, match=match):
        saliency(model, x, target, method, **kwargs)


def test_bad_images(setup):
    model, x, _ = setup
    with pytest.raises(UserError, match="4-D"):
        saliency(model, x[0], 1)
    with pytest.raises(UserError, match="floating"):
        saliency(model, (x * 255).to(torch.uint8), 1)
    with pytest.raises(UserError, match="empty"):
        saliency(model, x[:0], 1)


def test_gradcam_works_on_a_frozen_model():
    """The study freezes its models (requires_grad=False); Grad-CAM must still work."""
    import torch

    from robustlens.explain.saliency import grad_cam
    from robustlens.models import create

    torch.manual_seed(0)
    model = create("small_cnn", 10, width=4).eval()
    x = torch.rand(3, 3, 16, 16)
    expected = grad_cam(model, x, 1)
    for p in model.parameters():
        p.requires_grad_(False)
    assert torch.allclose(grad_cam(model, x, 1), expected)
