"""FAB / FAB-T (Croce & Hein, ICML 2020): the box-constrained hyperplane projection against
scipy's LP / QP solvers, closed-form minimal distances of affine classifiers, ART's DeepFool
as a reference on a trained model, properties (ball, box, misclassified, row-keyed
randomness, the ensemble with FAB-T never weaker), bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_attacks import BNNet, adv_model, eval_data, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustlens.attacks import fab, robust_accuracy
from robustlens.attacks.autoattack import MEMBERS, STANDARD, run_ensemble
from robustlens.attacks.evaluate import ATTACKS, normalize_attack
from robustlens.attacks.fab import FAB, project_hyperplane_box
from robustlens.errors import UserError
from robustlens.threat import ThreatModel, make_threat

MODEL = tiny_model(0)
BIG_EPS = {"linf": 1.0, "l2": 100.0, "l1": 1000.0}  # no budget: FAB returns its minimal adversarial
DUAL = {"linf": 1.0, "l2": 2.0, "l1": float("inf")}


# ---------------------------------------------------------------- the projection (Sec. 3.1)


def _scipy_min_norm(z: np.ndarray, w: np.ndarray, r: float, norm: str) -> float:
    """min ||delta||_p s.t. <w, delta> = r, 0 <= z + delta <= 1, by scipy (LP / bounded least squares)."""
    from scipy.optimize import linprog, lsq_linear

    n = len(z)
    if norm == "l1":  # delta = u - v, u, v >= 0
        res = linprog(np.ones(2 * n), A_eq=np.concatenate([w, -w])[None], b_eq=[r],
                      bounds=[(0, 1 - zj) for zj in z] + [(0, zj) for zj in z])
        return float(res.fun)
    if norm == "linf":  # variables delta, t; |delta_j| <= t
        eye, one = np.eye(n), np.ones((n, 1))
        res = linprog(np.r_[np.zeros(n), 1.0], A_ub=np.vstack([np.hstack([eye, -one]), np.hstack([-eye, -one])]),
                      b_ub=np.zeros(2 * n), A_eq=np.r_[w, 0.0][None], b_eq=[r],
                      bounds=[(-zj, 1 - zj) for zj in z] + [(0, None)])
        return float(res.fun)
    # L2: bounded least squares, the equality as a heavily weighted row (error ~ 1 / M^2)
    m = 1e5
    res = lsq_linear(np.vstack([np.eye(n), m * w[None]]), np.r_[np.zeros(n), m * r], bounds=(-z, 1 - z), method="bvls", tol=1e-14)
    return float(np.linalg.norm(res.x))


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_projection_onto_hyperplane_and_box_matches_scipy(norm):
    g = torch.Generator().manual_seed(3)
    z = torch.rand(6, 24, generator=g, dtype=torch.float64)
    w = torch.randn(6, 24, generator=g, dtype=torch.float64)
    r = torch.tensor([5.0, -6.0, 4.5, 0.05, -0.4, 0.0], dtype=torch.float64)  # the first three: the box binds
    d = project_hyperplane_box(z, w, r, norm)
    assert torch.allclose((w * d).sum(1), r, atol=1e-9)  # on the hyperplane
    assert float((z + d).min()) >= -1e-12 and float((z + d).max()) <= 1 + 1e-12  # in the box
    mine = d.norm(p=DUAL[{"linf": "l1", "l2": "l2", "l1": "linf"}[norm]], dim=1)
    ref = torch.tensor([_scipy_min_norm(z[i].numpy(), w[i].numpy(), float(r[i]), norm) for i in range(6)], dtype=torch.float64)
    assert torch.allclose(mine, ref, rtol=1e-5, atol=1e-7), (mine, ref)
    # the box binds in the first rows: the unconstrained distance |r| / ||w||_q is smaller
    free = r.abs() / w.norm(p=DUAL[norm], dim=1)
    assert float((mine[:3] / free[:3]).max()) > 1.05


def test_projection_infeasible_moves_every_coordinate_to_its_face():
    z = torch.full((1, 4), 0.5, dtype=torch.float64)
    w = torch.tensor([[1.0, -1.0, 0.0, 2.0]], dtype=torch.float64)
    for norm in ("linf", "l2", "l1"):  # <w, delta> can reach at most 0.5 * (1 + 1 + 2) = 2 < 5
        d = project_hyperplane_box(z, w, torch.tensor([5.0], dtype=torch.float64), norm)
        assert torch.allclose(d, torch.tensor([[0.5, -0.5, 0.0, 0.5]], dtype=torch.float64))


# ---------------------------------------------------------------- known results: affine models


class Affine(nn.Module):
    """``W (x - 0.5)`` on flattened images: the model contract of the attack tests."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.lin = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.lin.weight.copy_(weight)
            self.lin.bias.copy_(-0.5 * weight.sum(1))
        self.num_classes = weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def _closed_form(model: Affine, x: torch.Tensor, y: torch.Tensor, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimal distance to misclassification (box inactive) and its minimiser's max |delta_j|.

    d* = min_{s != c} (f_c - f_s)(x) / ||w_c - w_s||_q; the minimiser moves along the dual
    direction of w_c - w_s (Linf: sign, all coordinates by d*; L2: w / ||w||; L1: one coordinate by d*).
    """
    with torch.no_grad():
        z = model(x)
    W = model.lin.weight.detach()
    wd = W[y][:, None, :] - W[None]  # (N, K, d)
    q = DUAL[norm]
    dist = (z.gather(1, y[:, None]) - z) / wd.norm(p=q, dim=2).clamp_min(1e-30)
    dist[torch.arange(len(y)), y] = float("inf")
    dstar, s = dist.min(1)
    wbest = wd[torch.arange(len(y)), s]
    if norm == "linf":
        move = dstar
    elif norm == "l2":
        move = dstar * wbest.abs().amax(1) / wbest.norm(dim=1)
    else:
        move = dstar
    return dstar, move


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_affine_untargeted_finds_the_nearest_hyperplane(norm):
    g = torch.Generator().manual_seed(0)
    d, k = 3 * 8 * 8, 5
    model = Affine(0.05 * torch.randn(k, d, generator=g, dtype=torch.float64)).double().eval()
    x = 0.5 + 0.03 * torch.randn(12, 3, 8, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    dstar, move = _closed_form(model, x, y, norm)
    room = torch.minimum(x, 1 - x).flatten(1).amin(1)
    assert bool((move < room).all())  # the box does not bind: the closed form is the true minimum
    threat = make_threat(norm, BIG_EPS[norm])
    # one step from x_orig lands exactly at x_orig + eta * (projection onto the nearest hyperplane)
    one = threat.lengths(fab(model, x, y, threat, steps=1) - x) / dstar
    assert torch.allclose(one, torch.full_like(one, 1.05), atol=1e-9), one
    adv = fab(model, x, y, threat, steps=10)
    with torch.no_grad():
        assert bool((model(adv).argmax(1) != y).all())
    ratio = threat.lengths(adv - x) / dstar
    assert bool((ratio >= 1 - 1e-9).all()) and bool((ratio <= 1.02).all()), ratio  # the step back (beta) refines it


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_affine_targeted_reaches_the_target_hyperplane(norm):
    # disjoint equal-magnitude blocks: every ||w_c - w_s||_q is equal, so the top wrong logit
    # (FAB-T's first target) is also the nearest boundary, at d* = gap / ||w_c - w_t||_q
    k, block = 4, 48
    g = torch.Generator().manual_seed(1)
    weight = torch.zeros(k, k * block)
    for c in range(k):
        weight[c, c * block : (c + 1) * block] = 0.05 * (torch.randint(0, 2, (block,), generator=g) * 2 - 1)
    model = Affine(weight.double()).double().eval()
    x = 0.5 + 0.05 * torch.randn(10, 3, 8, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    dstar, _ = _closed_form(model, x, y, norm)
    threat = make_threat(norm, BIG_EPS[norm])
    adv = fab(model, x, y, threat, steps=8, targeted=True, n_target_classes=1)
    with torch.no_grad():
        z = model(x)
        target = z.scatter(1, y[:, None], float("-inf")).argmax(1)
        assert bool((model(adv).argmax(1) == target).all())
    ratio = threat.lengths(adv - x) / dstar
    assert bool((ratio >= 1 - 1e-9).all()) and bool((ratio <= 1.02).all()), ratio
    # with a budget below d* nothing is found: x itself comes back
    small = make_threat(norm, 0.9 * float(dstar.min()))
    assert torch.equal(fab(model, x, y, small, steps=8, targeted=True, n_target_classes=3), x)


# ---------------------------------------------------------------- properties


@settings(max_examples=10, deadline=None)
@given(
    targeted=st.booleans(),
    norm=st.sampled_from(["linf", "l2", "l1"]),
    eps=st.floats(0.0, 0.3),
    seed=st.integers(0, 1000),
    edge=st.booleans(),
    restarts=st.integers(1, 2),
)
def test_fab_stays_in_ball_and_box_and_changed_points_are_misclassified(targeted, norm, eps, seed, edge, restarts):
    threat = make_threat(norm, eps if norm == "linf" else eps * (4 if norm == "l2" else 20))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(6, 3, 12, 12, generator=g)
    if edge:  # pixels on the box's faces, where the projection's box constraint binds
        x = (x > 0.5).float()
    y = torch.randint(0, 10, (6,), generator=g)
    adv = fab(MODEL, x, y, threat, steps=4, targeted=targeted, n_target_classes=2, restarts=restarts, generator=g)
    assert adv.shape == x.shape
    assert bool(threat.contains(adv, x, atol=1e-6).all()), threat.lengths(adv - x).max()
    changed = (adv != x).flatten(1).any(1)
    with torch.no_grad():
        pred = MODEL(adv).argmax(1)
        clean_wrong = MODEL(x).argmax(1) != y
    assert bool((pred[changed] != y[changed]).all())
    assert not bool(changed[clean_wrong].any())  # misclassified when clean: x itself


def test_fab_not_worse_than_deepfool_from_art():
    """DeepFool (ART) is FAB's iteration without the bias towards x_orig and the box-aware
    projection: FAB's minimal L2 norms must not be larger."""
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import PyTorchClassifier

    model = adv_model()
    x, y = eval_data()
    x, y = x[:40], y[:40]
    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10, clip_values=(0.0, 1.0))
    x_df = torch.from_numpy(DeepFool(clf, max_iter=50, epsilon=1e-6, nb_grads=10, batch_size=64, verbose=False).generate(x.numpy()))
    for p in model.parameters():
        p.grad = None
    x_fab = fab(model, x, y, make_threat("l2", 100.0), steps=20)
    with torch.no_grad():
        ok = model(x).argmax(1) == y
        both = ok & (model(x_df).argmax(1) != y) & (model(x_fab).argmax(1) != y)
        assert bool((model(x_fab).argmax(1) != y)[ok].all())  # FAB fools every correct point (no budget)
    assert int(both.sum()) >= 30
    n_df = (x_df - x).flatten(1).norm(dim=1)[both]
    n_fab = (x_fab - x).flatten(1).norm(dim=1)[both]
    assert float(n_fab.median()) <= float(n_df.median()) * 1.01 + 1e-6, (float(n_fab.median()), float(n_df.median()))
    assert float((n_fab <= n_df * 1.01).float().mean()) >= 0.9


def test_ensemble_with_fab_t_is_never_weaker_and_matches_fab_t_alone():
    assert STANDARD == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert {"fab", "fab-t"} <= set(MEMBERS) and {"fab", "fab-t"} <= set(ATTACKS)
    model = adv_model()
    x, y = eval_data()
    x, y = x[:48], y[:48]
    threat = make_threat("linf", 12 / 255)
    kw = dict(steps=3, n_queries=5, n_target_classes=3, seed=0)
    _, clean, without = run_ensemble(model, x, y, threat, ("apgd-ce", "apgd-t"), **kw)
    x_adv, clean2, with_fab = run_ensemble(model, x, y, threat, ("apgd-ce", "apgd-t", "fab-t"), **kw)
    assert torch.equal(clean, clean2) and torch.equal(without["apgd-t"], with_fab["apgd-t"])
    robust_with, robust_without = with_fab["fab-t"], without["apgd-t"]
    assert bool((robust_with <= robust_without).all())  # a subset
    assert bool(threat.contains(x_adv, x, atol=1e-6).all())
    # FAB-T alone (the full minimum-norm search) breaks no point the ensemble's early-stopped FAB-T misses
    alone = robust_accuracy(model, (x, y), threat, attack="fab-t", steps=3, n_target_classes=3, progress=False, checks_enabled=False)
    ens = run_ensemble(model, x, y, threat, ("fab-t",), **kw)[2]["fab-t"]
    assert alone["robust_accuracy"] == pytest.approx(float(ens.float().mean()))
    assert alone["robust_accuracy"] < alone["clean_accuracy"]  # FAB-T breaks some points here
    assert alone["mean_norm_fooled"] <= 12 / 255 + 1e-6


def test_random_restarts_are_keyed_to_rows():
    x, y = eval_data()
    x, y = x[:12], y[:12]
    model = adv_model()
    threat = make_threat("l2", 0.4)
    idx = torch.tensor([1, 4, 5, 9, 11])
    full = fab(model, x, y, threat, steps=4, restarts=3, generator=torch.Generator().manual_seed(7))
    part = FAB(steps=4, restarts=3).perturb(model, x, y, threat, generator=torch.Generator().manual_seed(7), index=idx)
    assert torch.allclose(full[idx], part, atol=1e-6)


# ---------------------------------------------------------------- contracts and bad input


def test_fab_leaves_modes_and_parameter_gradients_alone():
    torch.manual_seed(0)
    m = BNNet()
    m.train()
    m.bn.eval()
    x, y = torch.rand(4, 3, 12, 12), torch.arange(4)
    for targeted in (False, True):
        fab(m, x, y, make_threat("l2", 0.5), steps=2, targeted=targeted, n_target_classes=2)
        assert m.training and not m.bn.training
    assert all(p.grad is None for p in m.parameters())


class _L3(ThreatModel):
    norm = "l3"

    def lengths(self, delta):
        return delta.flatten(1).abs().pow(3).sum(1).pow(1 / 3)

    def _project_delta(self, delta):
        return delta

    def _random_delta(self, x, generator):
        return torch.zeros_like(x)

    def direction(self, grad):
        return grad


def test_bad_input_is_a_user_error():
    x, y = torch.rand(4, 3, 12, 12), torch.arange(4)
    t = make_threat("linf", 0.03)
    with pytest.raises(UserError, match="threat: FAB supports"):
        fab(MODEL, x, y, _L3(0.1))
    for bad in (0, 10, -1, 2.5):
        with pytest.raises(UserError, match="n_target_classes"):
            fab(MODEL, x, y, t, targeted=True, n_target_classes=bad)
    for kw, name in (({"alpha_max": 1.5}, "alpha_max"), ({"eta": 0.9}, "eta"), ({"beta": 1.0}, "beta"), ({"steps": 0}, "steps"), ({"restarts": 0}, "restarts")):
        with pytest.raises(UserError, match=name):
            fab(MODEL, x, y, t, **kw)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        fab(MODEL, x * 2, y, t)
    with pytest.raises(UserError, match="at least 1 step"):
        robust_accuracy(MODEL, (x, y), t, attack="fab", steps=0, progress=False)
    assert normalize_attack("FAB_T") == "fab-t" and normalize_attack("fabt") == "fab-t"


# ---------------------------------------------------------------- command line


def test_attack_cli_fab_and_the_ensemble_fields(tmp_path, capsys):
    import json

    from robustlens.cli import main
    from robustlens.models import create
    from robustlens.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, create("small_cnn", 10, width=4), {})
    data = "trifeature:size=16,n_train=8,n_test=24,n_conflict=8"
    for attack, extra in (("fab-t", ["--steps", "2"]), ("autoattack", ["--steps", "1", "--queries", "2"])):
        out = tmp_path / f"{attack}.json"
        rc = main(["attack", "--checkpoint", str(ckpt), "--data", data, "--n", "8", "--attack", attack, "--out", str(out), "--no-checks", *extra])
        assert rc == 0
        res = json.loads(out.read_text())
        m = res["metrics"]
        assert 0 <= m["robust_accuracy"] <= m["clean_accuracy"] <= 1 and m["mean_norm"] <= 8 / 255 + 1e-6
        if attack == "fab-t":
            assert set(m["per_attack"]) == {"fab-t"} and res["config"]["fab_t"] is None
        else:
            assert list(m["per_attack"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
            assert res["config"]["fab_t"] == "included" and res["config"]["ensemble"] == list(STANDARD)
    assert "robust accuracy" in capsys.readouterr().out
