"""Attacks: properties (eps ball, [0, 1], robust <= clean, ensemble <= members), losses,
APGD and Square schedules, bad input, train/eval mode, warnings."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers_attacks import BNNet, TinyNet, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from robustlens.attacks import apgd, apgd_ce, apgd_t, autoattack, fgsm, pgd, robust_accuracy, square
from robustlens.attacks import checks, losses
from robustlens.attacks.apgd import checkpoint_fractions, checkpoints
from robustlens.attacks.square import p_selection
from robustlens.errors import UserError
from robustlens.threat import make_threat

MODEL = tiny_model(0)

ATTACKS = {
    "fgsm": lambda m, x, y, t, g: fgsm(m, x, y, t, generator=g),
    "fgsm-rs": lambda m, x, y, t, g: fgsm(m, x, y, t, random_start=True, generator=g),
    "pgd": lambda m, x, y, t, g: pgd(m, x, y, t, steps=3, restarts=2, generator=g),
    "pgd-cw-early": lambda m, x, y, t, g: pgd(m, x, y, t, steps=3, loss="cw", early_stop=True, generator=g),
    "pgd-targeted": lambda m, x, y, t, g: pgd(m, x, (y + 1) % 10, t, steps=3, targeted=True, generator=g),
    "apgd-ce": lambda m, x, y, t, g: apgd_ce(m, x, y, t, steps=4, generator=g),
    "apgd-dlr": lambda m, x, y, t, g: apgd(m, x, y, t, steps=4, loss="dlr", generator=g),
    "apgd-t": lambda m, x, y, t, g: apgd_t(m, x, y, t, steps=3, n_target_classes=2, generator=g),
    "square": lambda m, x, y, t, g: square(m, x, y, t, n_queries=6, generator=g),
    "autoattack": lambda m, x, y, t, g: autoattack(m, x, y, t, steps=3, n_queries=4, n_target_classes=2),
}


@settings(max_examples=12, deadline=None)
@given(
    attack=st.sampled_from(sorted(ATTACKS)),
    norm=st.sampled_from(["linf", "l2", "l1"]),
    eps=st.floats(0.0, 0.5),
    seed=st.integers(0, 1000),
    edge=st.booleans(),
)
def test_adversarial_images_stay_in_ball_and_box(attack, norm, eps, seed, edge):
    if norm == "l1" and attack in ("square", "autoattack"):
        return  # Square supports linf and l2 only (UserError tested below)
    threat = make_threat(norm, eps if norm == "linf" else eps * (4 if norm == "l2" else 20))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(6, 3, 12, 12, generator=g)
    if edge:  # pixels on the box's faces, where clipping matters
        x = (x > 0.5).float()
    y = torch.randint(0, 10, (6,), generator=g)
    adv = ATTACKS[attack](MODEL, x, y, threat, g)
    assert adv.shape == x.shape
    assert bool(threat.contains(adv, x, atol=1e-5).all()), (attack, norm, threat.lengths(adv - x).max())


def test_square_rejects_l1():
    x = torch.rand(2, 3, 12, 12)
    with pytest.raises(UserError, match="linf and l2"):
        square(MODEL, x, torch.zeros(2, dtype=torch.long), make_threat("l1", 1.0), n_queries=2)


@settings(max_examples=8, deadline=None)
@given(attack=st.sampled_from(["fgsm", "pgd", "apgd-ce", "square"]), seed=st.integers(0, 100), eps=st.floats(0.0, 0.2))
def test_robust_accuracy_never_exceeds_clean(attack, seed, eps):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(20, 3, 12, 12, generator=g)
    with torch.no_grad():
        y = MODEL(x).argmax(1)
    y[::3] = (y[::3] + 1) % 10  # some misclassified points
    kw = {"n_queries": 5} if attack == "square" else ({} if attack == "fgsm" else {"steps": 3})
    r = robust_accuracy(MODEL, (x, y), make_threat("linf", eps), attack=attack, progress=False, seed=seed, **kw)
    assert 0 <= r["robust_accuracy"] <= r["clean_accuracy"] <= 1
    assert r["clean_accuracy"] == pytest.approx(float((MODEL(x).argmax(1) == y).float().mean()))
    assert r["n"] == 20 and r["mean_norm"] <= eps + 1e-6


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 1000), eps=st.sampled_from([0.02, 0.04, 0.08]))
def test_ensemble_never_weaker_than_its_strongest_member(seed, eps):
    from helpers_attacks import adv_model, eval_data

    model = adv_model()
    x, y = eval_data()
    x, y = x[:40], y[:40]
    threat = make_threat("linf", eps)
    kw = dict(progress=False, seed=seed, checks_enabled=False, batch_size=64)
    ens = robust_accuracy(model, (x, y), threat, attack="autoattack", n_target_classes=3, steps=5, n_queries=20, **kw)
    members = {
        "apgd-ce": robust_accuracy(model, (x, y), threat, attack="apgd-ce", steps=5, **kw)["robust_accuracy"],
        "apgd-t": robust_accuracy(model, (x, y), threat, attack="apgd-t", n_target_classes=3, steps=5, **kw)["robust_accuracy"],
        "square": robust_accuracy(model, (x, y), threat, attack="square", n_queries=20, **kw)["robust_accuracy"],
    }
    assert ens["robust_accuracy"] <= min(members.values()) + 1e-12, (ens, members)
    # per-attack accuracies after each member never rise along the sequence
    seq = list(ens["per_attack"].values())
    assert seq == sorted(seq, reverse=True) and seq[-1] == ens["robust_accuracy"]
    assert ens["per_attack"]["apgd-ce"] == members["apgd-ce"]


# ---------------------------------------------------------------- losses


def test_losses_known_values():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0, -2.0], [0.0, 2.0, 1.0, 0.5, -1.0]])
    y = torch.tensor([0, 0])
    assert torch.allclose(losses.ce(z, y), F.cross_entropy(z, y, reduction="none"))
    assert torch.allclose(losses.margin(z, y), torch.tensor([1.0 - 3.0, 2.0 - 0.0]))
    # DLR = -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3)
    assert torch.allclose(losses.dlr(z, y), torch.tensor([-(3.0 - 1.0) / (3.0 - 0.0), -(0.0 - 2.0) / (2.0 - 0.5)]))
    t = torch.tensor([2, 3])
    want = torch.tensor([-(3.0 - 0.0) / (3.0 - 0.5 * (0.0 + -1.0)), -(0.0 - 0.5) / (2.0 - 0.5 * (0.5 + 0.0))])
    assert torch.allclose(losses.dlr_targeted(z, y, t), want)


def test_dlr_is_shift_and_scale_invariant():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    t = (y + 1) % 10
    assert torch.allclose(losses.dlr(z, y), losses.dlr(7 * z + 3, y), atol=1e-5)
    assert torch.allclose(losses.dlr_targeted(z, y, t), losses.dlr_targeted(0.1 * z - 2, y, t), atol=1e-5)


def test_targeted_losses_and_bad_names():
    z = torch.tensor([[2.0, 1.0, 0.0]])
    t = torch.tensor([1])
    assert torch.allclose(losses.get_loss("ce", targeted=True)(z, t), -F.cross_entropy(z, t, reduction="none"))
    assert torch.allclose(losses.get_loss("cw", targeted=True)(z, t), torch.tensor([1.0 - 2.0]))
    with pytest.raises(UserError, match="ce, cw, dlr"):
        losses.get_loss("hinge")
    with pytest.raises(UserError, match="at least 3"):
        losses.dlr(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    assert losses.is_probability_output(torch.softmax(torch.randn(4, 5), 1))
    assert not losses.is_probability_output(torch.randn(4, 5))


# ---------------------------------------------------------------- schedules


def test_apgd_checkpoints_known_values():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein 2020, Sec. 3.2)
    assert [float(p) for p in checkpoint_fractions()] == pytest.approx([0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99])
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1000) == [0, 220, 410, 570, 700, 800, 870, 930, 990]


def _authors_checkpoints(n_iter: int) -> list[int]:
    """The authors' code: first check after int(0.22 N), then intervals shrink by int(0.03 N)
    down to int(0.06 N)."""
    k, dec, lo = max(int(0.22 * n_iter), 1), max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    out, w = [0], 0
    while w + k <= n_iter:
        w += k
        out.append(w)
        k = max(k - dec, lo)
    return out


@pytest.mark.parametrize("n_iter", [100, 200, 1000])
def test_apgd_checkpoints_match_authors_code_at_round_budgets(n_iter):
    assert checkpoints(n_iter) == _authors_checkpoints(n_iter)[: len(checkpoints(n_iter))]


def test_square_p_schedule():
    assert p_selection(0.8, 0, 10000) == 0.8
    assert p_selection(0.8, 10, 10000) == 0.8
    assert p_selection(0.8, 11, 10000) == 0.4
    assert p_selection(0.8, 300, 10000) == pytest.approx(0.1)
    assert p_selection(0.8, 9000, 10000) == pytest.approx(0.8 / 512)
    assert p_selection(0.8, 5, 5000) == 0.8 and p_selection(0.8, 6, 5000) == 0.4  # rescaled: 6/5000*10000 = 12


# ---------------------------------------------------------------- PGD semantics


def test_pgd_defaults_and_determinism():
    x = torch.rand(8, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    t = make_threat("linf", 0.05)
    a = pgd(MODEL, x, y, t, generator=torch.Generator().manual_seed(3))
    b = pgd(MODEL, x, y, t, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # no random start, 1 step of size eps == FGSM
    assert torch.allclose(pgd(MODEL, x, y, t, steps=1, step_size=0.05, random_start=False), fgsm(MODEL, x, y, t), atol=1e-7)


def test_pgd_restarts_keep_worst_case_and_early_stop_freezes():
    from helpers_attacks import adv_model, eval_data

    model = adv_model()
    x, y = eval_data()
    x, y = x[:60], y[:60]
    t = make_threat("linf", 12 / 255)
    def acc(a):
        with torch.no_grad():
            return float((model(a).argmax(1) == y).float().mean())
    one = acc(pgd(model, x, y, t, steps=5, generator=torch.Generator().manual_seed(0)))
    three = acc(pgd(model, x, y, t, steps=5, restarts=3, generator=torch.Generator().manual_seed(0)))
    assert three <= one  # the first restart is the same run; later ones only add successes
    es = pgd(model, x, y, t, steps=5, early_stop=True, generator=torch.Generator().manual_seed(0))
    assert acc(es) <= one + 1e-12  # a fooled iterate is kept, never undone


def test_targeted_pgd_reaches_targets_on_std_model():
    from helpers_attacks import std_model, eval_data

    model = std_model()
    x, y = eval_data()
    x, y = x[:30], y[:30]
    target = (y + 3) % 10
    adv = pgd(model, x, target, make_threat("linf", 0.2), steps=20, targeted=True, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float((model(adv).argmax(1) == target).float().mean()) > 0.8


# ---------------------------------------------------------------- contracts


def test_modes_and_parameter_gradients_untouched():
    torch.manual_seed(0)
    m = BNNet()
    m.train()
    m.bn.eval()  # a mixed state must come back exactly
    x, y = torch.rand(4, 3, 12, 12), torch.arange(4)
    threat = make_threat("linf", 0.03)
    for f in (lambda: pgd(m, x, y, threat, steps=2), lambda: apgd_ce(m, x, y, threat, steps=2), lambda: square(m, x, y, threat, n_queries=2)):
        f()
        assert m.training and not m.bn.training
    r = robust_accuracy(m, (x, y), threat, steps=2, progress=False)
    assert m.training and not m.bn.training and r["n"] == 4
    assert all(p.grad is None for p in m.parameters())
    assert all(p.requires_grad for p in m.parameters())


def test_bad_input_is_a_user_error_before_any_work():
    x, y = torch.rand(4, 3, 12, 12), torch.arange(4)
    t = make_threat("linf", 0.03)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        pgd(MODEL, x * 2, y, t)
    with pytest.raises(UserError, match=r"0\.\.9"):
        pgd(MODEL, x, y + 8, t)
    with pytest.raises(UserError, match="fgsm, pgd, apgd-ce"):
        robust_accuracy(MODEL, (x, y), t, attack="deepfool")
    with pytest.raises(UserError, match="steps"):
        pgd(MODEL, x, y, t, steps=-1)
    with pytest.raises(UserError, match="unknown options"):
        robust_accuracy(MODEL, (x, y), t, stepz=3)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        robust_accuracy(MODEL, (x - 0.5, y), t, progress=False)
    with pytest.raises(UserError, match="threat"):
        pgd(MODEL, x, y, 0.03)
    with pytest.raises(UserError, match="integer class"):
        pgd(MODEL, x, y.float(), t)


# ---------------------------------------------------------------- checks


class _Softmaxed(TinyNet):
    def forward(self, x):
        return super().forward(x).softmax(1)


class _Noisy(TinyNet):
    def forward(self, x):
        return super().forward(x + 0.01 * torch.randn_like(x))


class _Masked(TinyNet):
    def forward(self, x):
        return super().forward(torch.round(x * 4) / 4)  # zero gradient almost everywhere


@pytest.mark.parametrize(
    "cls,pattern",
    [(_Softmaxed, "softmax"), (_Noisy, "changes between identical calls"), (_Masked, "zero input gradients")],
)
def test_checks_warn(cls, pattern):
    torch.manual_seed(0)
    m = cls().eval()
    x, y = torch.rand(8, 3, 12, 12), torch.arange(8)
    with pytest.warns(checks.EvaluationWarning, match=pattern):
        r = robust_accuracy(m, (x, y), make_threat("linf", 0.03), steps=1, progress=False)
    assert any(pattern in w for w in r["warnings"])


def test_checks_quiet_on_a_sound_model_and_steps_check():
    x, y = torch.rand(8, 3, 12, 12), torch.arange(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", checks.EvaluationWarning)
        r = robust_accuracy(MODEL, (x, y), make_threat("linf", 0.03), steps=2, check_steps=True, progress=False)
    assert r["warnings"] == []
    with pytest.warns(checks.EvaluationWarning, match="rose from 40.00% at 5 steps"):
        checks.check_steps(0.5, 0.4, 10, 100)
    assert checks.check_steps(0.41, 0.40, 10, 100) is None
    with pytest.warns(checks.EvaluationWarning, match="non-finite"):
        checks.check_gradients(lambda z: z.flatten(1)[:, :10] * float("nan"), torch.rand(2, 3, 4, 4), torch.arange(2))
