"""Faithfulness and stability metrics against captum.metrics and Quantus on the same inputs.

Tolerances: infidelity and max-sensitivity within 1e-5 relative of captum (float32; observed
< 1e-7); pixel-flipping curves within 1e-6 absolute of Quantus (observed 0); noisy linear
imputation within 1e-10 of Quantus's (float64; observed 3e-16); ROAD accuracies equal."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from helpers_explain import small_model
from robustlens.errors import UserError
from robustlens.explain import faithfulness as fa
from robustlens.explain import stability as st

S = importlib.import_module("robustlens.explain.saliency")
cm = pytest.importorskip("captum.metrics")
quantus = pytest.importorskip("quantus")
warnings.filterwarnings("ignore")
pytestmark = pytest.mark.usefixtures("one_thread")


def rel_err(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 16, 16, generator=g)
    phi = torch.randn(4, 3, 16, 16, generator=g)  # distinct values: no ties in any ranking
    return small_model(dtype=torch.float32), x, torch.tensor([1, 2, 3, 9]), phi, g


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_matches_captum(setup, normalize):
    model, x, t, phi, g = setup
    n = 5
    pert = 0.1 * torch.randn(n, *x.shape, generator=g)
    flat = pert.transpose(0, 1).reshape(-1, *x.shape[1:])  # captum's rows: image-major
    ref = cm.infidelity(model, lambda inp: (flat, inp - flat), x, phi, target=t, n_perturb_samples=n, normalize=normalize)
    ours = fa.infidelity(model, x, t, phi, n_samples=n, perturbations=pert, normalize=normalize, internal_batch_size=7)
    assert rel_err(ours, ref) < 1e-5
    rel = fa.infidelity(model, x, t, phi, n_samples=n, perturbations=pert, normalize=True, relative=True)
    assert bool(((rel >= 0) & (rel <= 1 + 1e-6)).all())


def test_max_sensitivity_matches_captum(setup):
    model, x, t, _, g = setup
    n = 5
    d = 0.02 * (2 * torch.rand(n, *x.shape, generator=g) - 1)
    flat = d.transpose(0, 1).reshape(-1, *x.shape[1:])
    ref = cm.sensitivity_max(lambda inp, target: (S.vanilla_gradient(model, inp[0] if isinstance(inp, tuple) else inp, target),),
                             x, perturb_func=lambda inp, r: inp + flat, n_perturb_samples=n, target=t)
    ours = st.max_sensitivity(model, x, t, "vanilla", n_samples=n, perturbations=d, internal_batch_size=7)
    assert rel_err(ours, ref) < 1e-5
    ch = st.explanation_changes(model, x, t, "vanilla", n_samples=n, perturbations=d)
    manual = max(float((S.vanilla_gradient(model, x + d[s], t) - S.vanilla_gradient(model, x, t)).flatten(1).norm(dim=1)[0]
                       / d[s][0].flatten().norm()) for s in range(n))
    assert abs(float(st.lipschitz_from(ch)[0]) - manual) < 1e-4 * manual


def test_pixel_flipping_matches_quantus(setup):
    model, x, t, phi, _ = setup
    per_step = 16  # Quantus: features per step must divide H x W; 768 features -> 48 steps
    q = quantus.PixelFlipping(features_in_step=per_step, perturb_baseline=0.5, disable_warnings=True, display_progressbar=False)
    ref = np.array(q(model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=phi.numpy(), device="cpu", softmax=True, channel_first=True))
    ours = fa.deletion_curve(model, x, t, phi, baseline=0.5, steps=48, ranking="elementwise", internal_batch_size=13)
    assert np.abs(ours["scores"][:, 1:].numpy() - ref).max() < 1e-6
    # Quantus's area (trapezoid, dx = 1, no point at 0) from our curve
    assert torch.allclose(torch.trapezoid(ours["scores"][:, 1:], dim=1), torch.trapezoid(torch.tensor(ref), dim=1).float(), atol=1e-5)


def test_insertion_and_deletion_are_mirror_images(setup):
    model, x, t, phi, _ = setup
    d = fa.deletion_curve(model, x, t, phi, baseline=0.2, steps=8)
    i = fa.insertion_curve(model, x, t, phi, baseline=0.2, steps=8)
    assert torch.allclose(d["scores"][:, 0], i["scores"][:, -1]) and torch.allclose(d["scores"][:, -1], i["scores"][:, 0])
    # the internal batch changes nothing
    d2 = fa.deletion_curve(model, x, t, phi, baseline=0.2, steps=8, internal_batch_size=3)
    assert torch.equal(d["scores"], d2["scores"])


def test_noisy_linear_imputation_matches_quantus():
    from quantus.functions.perturb_func import noisy_linear_imputation as q_nli

    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 12, 12, generator=g, dtype=torch.float64)
    removed = torch.rand(3, 12, 12, generator=g) < 0.6
    ours = fa.noisy_linear_imputation(x, removed, noise=0.0)
    for i in range(3):
        ref = q_nli(x[i].numpy(), np.nonzero(removed[i].flatten().numpy())[0], noise=0.0)
        assert np.abs(ref - ours[i].numpy()).max() < 1e-10
    assert torch.equal(ours[~removed[:, None].expand_as(x)], x[~removed[:, None].expand_as(x)])


def test_road_matches_quantus():
    """Quantus's ROAD indexes pixels of single-channel images only: a 1-channel net here."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 144, 10)).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(16, 1, 12, 12, generator=g)
    t = net(x).argmax(1)
    a = torch.randn(16, 1, 12, 12, generator=g)
    pcts = [10, 30, 50, 70, 90]
    q = quantus.ROAD(percentages=pcts, noise=0.0, disable_warnings=True, display_progressbar=False)
    ref = q(model=net, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a.numpy(), device="cpu", channel_first=True)
    ours = fa.road(net, x, t, a, fractions=[p / 100 for p in pcts], noise=0.0, ranking="signed", internal_batch_size=11)
    assert ours["morf"]["accuracy"] == pytest.approx([float(ref[p]) for p in pcts], abs=1e-9)
    assert min(ours["morf"]["accuracy"]) < 1.0  # the check is not vacuous
    assert "gap" in ours and ours["lerf"]["correct"].shape == (16, 5)


def test_bad_input_one_line_errors(setup):
    model, x, t, phi, _ = setup
    with pytest.raises(UserError, match="deletion: needs a baseline") as e:
        fa.deletion_curve(model, x, t, phi)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="insertion: needs a baseline"):
        fa.insertion_curve(model, x, t, phi)
    for bad in ([0.0, 0.5], [0.5, 1.0], [1.5], []):
        with pytest.raises(UserError, match="fractions: every fraction must lie strictly between 0 and 1"):
            fa.road(model, x, t, phi, fractions=bad)
    with pytest.raises(UserError, match="maps: expected a tensor"):
        fa.deletion_curve(model, x, t, phi[:, :, :8], baseline=0.0)
    with pytest.raises(UserError, match="radius: expected a number > 0"):
        st.max_sensitivity(model, x, t, "vanilla", radius=0)
