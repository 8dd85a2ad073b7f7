"""Parameter-randomisation sanity checks: order, determinism, near-zero correlation, Quantus MPRT."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from helpers_explain import small_model, procedural_test_set, trained_model
from robustlens.errors import UserError
from robustlens.explain.saliency import saliency
from robustlens.explain.sanity import (
    cascading_randomization,
    independent_randomization,
    parametrised_layers,
    randomized_models,
    sanity_curves,
    similarity,
    spearman_rows,
)


def test_layer_order_and_cascade():
    model = small_model()
    names = [n for n, _ in parametrised_layers(model)]
    assert names == ["body.0", "body.1", "body.4", "body.5", "body.8", "body.9", "body.12", "body.13", "fc"]
    orig = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    for name, rm in randomized_models(model, "top_down", seed=0):
        seen.append(name)
        changed = {k.rsplit(".", 1)[0] for k, v in rm.state_dict().items() if k.endswith("weight") and not torch.equal(v, orig[k])}
        # cascading: every layer randomised so far (BN weights reset to 1 only differ when trained)
        assert name in changed or name.endswith((".1", ".5", ".9", ".13"))
        assert changed <= set(seen)
    assert seen == names[::-1]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in orig.items())  # original untouched
    for name, rm in randomized_models(model, "independent", seed=0):
        changed = {k.rsplit(".", 1)[0] for k, v in rm.state_dict().items() if k.endswith("weight") and not torch.equal(v, orig[k])}
        assert changed <= {name}


def test_deterministic_from_seed_and_rng_untouched():
    model = small_model()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = cascading_randomization(model, x, [0, 1], "vanilla", seed=7, metrics=("spearman",))
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = cascading_randomization(model, x, [0, 1], "vanilla", seed=7, metrics=("spearman",))
    c = cascading_randomization(model, x, [0, 1], "vanilla", seed=8, metrics=("spearman",))
    assert a["metrics"] == b["metrics"]
    assert a["metrics"] != c["metrics"]
    assert a["layers"] == ["original"] + [n for n, _ in parametrised_layers(model)][::-1]


def test_fully_randomised_model_gives_rank_correlation_near_zero():
    model = trained_model()
    data = procedural_test_set()
    x, y = data.float()[:6].double(), data.labels[:6]
    res = cascading_randomization(model, x, y, "vanilla", metrics=("spearman", "spearman_abs", "ssim", "hog"))
    rho = res["metrics"]["spearman"]["mean"]
    assert rho[0] == pytest.approx(1.0)
    assert abs(rho[-1]) < 0.2, rho
    assert res["metrics"]["ssim"]["mean"][0] == pytest.approx(1.0)
    assert res["metrics"]["hog"]["mean"][0] == pytest.approx(1.0)
    ind = independent_randomization(model, x, y, "vanilla", metrics=("spearman",))
    assert ind["layers"] == res["layers"]
    # randomising only the first conv keeps more of the map than randomising everything
    assert ind["metrics"]["spearman"]["mean"][-1] > rho[-1]


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    g = np.random.default_rng(0)
    a = g.normal(size=(3, 50))
    b = a + g.normal(size=(3, 50))
    a[0, :10] = 0.0  # ties
    ours = spearman_rows(a, b)
    ref = [spearmanr(a[i], b[i])[0] for i in range(3)]
    assert np.allclose(ours, ref, atol=1e-12)
    assert spearman_rows(np.ones((1, 5)), a[:1, :5])[0] == 0.0


def test_similarity_bad_metric():
    m = torch.rand(1, 3, 16, 16)
    with pytest.raises(UserError, match="unknown metric"):
        similarity(m, m, ("pearson",))
    with pytest.raises(UserError, match="order"):
        next(randomized_models(small_model(), "sideways"))


def test_matches_quantus_mprt():
    quantus = pytest.importorskip("quantus")
    model = small_model()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = np.array([1, 2, 3])

    def explain(model, inputs, targets, **_):
        xx = torch.as_tensor(inputs, dtype=torch.float64)
        return saliency(model, xx, torch.as_tensor(targets), "guided").sum(1, keepdim=True).detach().numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mprt = quantus.MPRT(layer_order="top_down", seed=42, abs=False, normalise=False, disable_warnings=True)
        q = mprt(model=model, x_batch=x.numpy(), y_batch=y, a_batch=None, explain_func=explain, device="cpu", batch_size=8)

    def quantus_rule(module, _k):  # Quantus re-seeds the global RNG with seed + 1 before each layer
        torch.manual_seed(42 + 1)
        module.reset_parameters()

    ours = cascading_randomization(model, x, y, "guided", randomize=quantus_rule, metrics=("spearman",))
    assert list(q) == ours["layers"]
    for k, layer in enumerate(q):
        assert np.allclose(q[layer], ours["metrics"]["spearman"]["per_image"][k], atol=1e-10), layer


def test_curves_png(tmp_path):
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    models = {"random": small_model(seed=1), "STD": small_model(seed=2)}
    res = sanity_curves(models, x, [0, 1], methods=("vanilla",), metrics=("spearman", "ssim"), path=tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert set(res) == {"random", "STD"}
    assert len(res["STD"]["vanilla"]["metrics"]["ssim"]["mean"]) == 10
