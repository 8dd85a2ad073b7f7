"""The attacks as one family: the registry holds exactly robustlens.names.ATTACKS, unknown
names and options are one-line errors, a configured attack is the public function."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers_attacks import tiny_model

from robustlens import names
from robustlens.attacks import (
    APGD,
    ATTACKS,
    FAB,
    FABT,
    PGD,
    Attack,
    AutoAttack,
    Square,
    apgd,
    apgd_t,
    autoattack,
    fab,
    fgsm,
    make_attack,
    normalize_attack,
    pgd,
    robust_accuracy,
    square,
)
from robustlens.attacks.autoattack import MEMBERS
from robustlens.errors import UserError
from robustlens.threat import make_threat

MODEL = tiny_model(0)


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 12, 12, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_registry_holds_exactly_the_names_in_order():
    assert ATTACKS.names() == list(names.ATTACKS)
    assert MEMBERS == names.ENSEMBLE_MEMBERS
    for name, cls in ATTACKS.items():
        assert issubclass(cls, Attack) and cls.name == name
        assert dataclasses.is_dataclass(cls) and ATTACKS.info()[name]


def test_unknown_attack_is_a_close_match_error():
    with pytest.raises(UserError, match=r"^--attack: unknown attack 'pdg' \(did you mean 'pgd'\?\); valid: fgsm, pgd, apgd-ce,"):
        make_attack("pdg")
    with pytest.raises(UserError, match=r"did you mean 'square'"):
        robust_accuracy(MODEL, _batch(), make_threat("linf", 0.03), attack="sqare", progress=False)
    assert normalize_attack("AA") == "autoattack" and normalize_attack("apgd") == "apgd-ce"
    assert normalize_attack("APGD_T") == "apgd-t" and normalize_attack("fgsm_rs") == "fgsm"


def test_unknown_option_is_refused_by_the_dataclass():
    msg = r"^pgd: unknown options 'stepz' \(did you mean 'steps'\?\); valid: steps, step_size, restarts, loss, targeted, random_start, early_stop$"
    with pytest.raises(UserError, match=msg):
        PGD(stepz=3)
    with pytest.raises(UserError, match=msg):
        pgd(MODEL, *_batch(), make_threat("linf", 0.03), stepz=3)
    with pytest.raises(UserError, match=r"^square: unknown options 'steps'.*; valid: n_queries, p_init$"):
        make_attack("square", steps=5)
    with pytest.raises(UserError, match="square: unknown options 'steps'"):  # robust_accuracy asks the attack
        robust_accuracy(MODEL, _batch(), make_threat("linf", 0.03), attack="square", steps=5, progress=False)
    with pytest.raises(UserError, match="autoattack: unknown options 'restarts'"):
        AutoAttack(restarts=2)
    with pytest.raises(UserError, match="set them on the attack"):
        robust_accuracy(MODEL, _batch(), make_threat("linf", 0.03), attack=PGD(), steps=2, progress=False)


def test_bad_values_are_refused_before_any_work():
    with pytest.raises(UserError, match="at least 1 step"):
        APGD(steps=0)
    with pytest.raises(UserError, match="p_init"):
        Square(p_init=0.0)
    with pytest.raises(UserError, match="beta"):
        FABT(beta=1.0)
    with pytest.raises(UserError, match="unknown member 'pgd'"):
        AutoAttack(attacks=("apgd-ce", "pgd"))
    with pytest.raises(UserError, match="unknown loss"):
        PGD(loss="hinge")
    with pytest.raises(dataclasses.FrozenInstanceError):
        PGD().steps = 3  # type: ignore[misc]


def test_defaults_are_written_once_and_options_are_fields():
    assert PGD().steps == 10 and APGD().steps == 100 and FAB().steps == 100
    assert (FAB().alpha_max, FAB().eta, FAB().beta) == (0.1, 1.05, 0.9) and FABT().targeted
    assert Square().p_init == 0.8 and Square().n_queries == 5000
    assert ATTACKS.get("apgd-dlr")().loss == "dlr" and ATTACKS.get("apgd-ce")().loss == "ce"
    assert PGD.options() == ("steps", "step_size", "restarts", "loss", "targeted", "random_start", "early_stop")


def test_ensemble_members_are_registry_attacks_with_the_ensemble_budget():
    members = dict(AutoAttack(attacks=MEMBERS, steps=7, n_queries=11, n_target_classes=2).members())
    assert list(members) == list(MEMBERS)
    assert members["apgd-ce"] == APGD(steps=7) and members["apgd-dlr"] == ATTACKS.get("apgd-dlr")(steps=7)
    assert members["apgd-t"] == ATTACKS.get("apgd-t")(steps=7, n_target_classes=2)
    assert members["fab-t"] == FABT(steps=7, n_target_classes=2, stop_within_eps=True)
    assert members["fab"] == FAB(steps=7, n_target_classes=2, stop_within_eps=True)
    assert members["square"] == Square(n_queries=11)


CASES = [
    ("fgsm", {"random_start": True}, lambda m, x, y, t, g: fgsm(m, x, y, t, random_start=True, generator=g)),
    ("pgd", {"steps": 3, "restarts": 2}, lambda m, x, y, t, g: pgd(m, x, y, t, steps=3, restarts=2, generator=g)),
    ("apgd-ce", {"steps": 4}, lambda m, x, y, t, g: apgd(m, x, y, t, steps=4, generator=g)),
    ("apgd-dlr", {"steps": 4, "restarts": 2}, lambda m, x, y, t, g: apgd(m, x, y, t, steps=4, restarts=2, loss="dlr", generator=g)),
    ("apgd-t", {"steps": 3, "n_target_classes": 2}, lambda m, x, y, t, g: apgd_t(m, x, y, t, steps=3, n_target_classes=2, generator=g)),
    ("fab", {"steps": 3, "restarts": 2}, lambda m, x, y, t, g: fab(m, x, y, t, steps=3, restarts=2, generator=g)),
    ("fab-t", {"steps": 2, "n_target_classes": 2}, lambda m, x, y, t, g: fab(m, x, y, t, steps=2, targeted=True, n_target_classes=2, generator=g)),
    ("square", {"n_queries": 8}, lambda m, x, y, t, g: square(m, x, y, t, n_queries=8, generator=g)),
    ("autoattack", {"steps": 2, "n_queries": 4, "n_target_classes": 2}, lambda m, x, y, t, g: autoattack(m, x, y, t, steps=2, n_queries=4, n_target_classes=2, seed=5)),
]


@pytest.mark.parametrize("name,options,public", CASES, ids=[c[0] for c in CASES])
def test_a_configured_attack_is_the_public_function_bitwise(name, options, public):
    x, y = _batch(10, seed=1)
    threat = make_threat("l2", 0.5)
    a = ATTACKS.get(name)(**options)(MODEL, x, y, threat, generator=torch.Generator().manual_seed(5))
    b = public(MODEL, x, y, threat, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert bool(threat.contains(a, x, atol=1e-5).all())


def test_robust_accuracy_takes_a_configured_attack():
    x, y = _batch(16, seed=2)
    threat = make_threat("linf", 0.05)
    kw = dict(progress=False, seed=3, batch_size=6, checks_enabled=False)
    by_name = robust_accuracy(MODEL, (x, y), threat, attack="pgd", steps=3, restarts=2, step_size=None, **kw)
    by_config = robust_accuracy(MODEL, (x, y), threat, attack=PGD(steps=3, restarts=2), **kw)
    for key in ("clean_accuracy", "robust_accuracy", "per_attack", "mean_norm", "mean_norm_fooled", "attack"):
        assert by_name[key] == by_config[key]
    assert by_name["options"] == {"steps": 3, "restarts": 2, "step_size": None}  # as given


@pytest.mark.parametrize("attack", [PGD(steps=3), APGD(steps=3), Square(n_queries=6)], ids=["pgd", "apgd", "square"])
def test_randomness_is_keyed_to_rows(attack):
    x, y = _batch(12, seed=3)
    threat = make_threat("linf", 0.05)
    idx = torch.tensor([0, 3, 4, 9])
    full = attack(MODEL, x, y, threat, generator=torch.Generator().manual_seed(2))
    part = attack.perturb(MODEL, x, y, threat, generator=torch.Generator().manual_seed(2), index=idx)
    assert torch.allclose(full[idx], part, atol=1e-6)
