"""AutoAttack's versions as the authors name them (issue 18, item 4), EOT in ``rand``, and the
headline = the per-image worst case of PGD and the ensemble (issue 20, item 4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlens.attacks.apgd import APGD
from robustlens.attacks.autoattack import AutoAttack
from robustlens.attacks.evaluate import robust_accuracy
from robustlens.errors import UserError
from robustlens.threat import make_threat


def _opts(version: str) -> list[tuple[str, dict]]:
    from dataclasses import asdict

    return [(n, asdict(a)) for n, a in AutoAttack(version=version).members()]


def test_standard_plus_rand_are_the_authors_compositions():
    std = _opts("standard")
    assert [n for n, _ in std] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert std[1][1]["n_target_classes"] == 9 and std[2][1]["n_target_classes"] == 9 and std[3][1]["n_queries"] == 5000
    assert all(o.get("steps", 100) == 100 and o.get("restarts", 1) == 1 for _, o in std)
    plus = dict(_opts("plus"))
    assert list(plus) == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    assert plus["apgd-ce"]["restarts"] == plus["apgd-dlr"]["restarts"] == plus["fab"]["restarts"] == 5
    assert plus["apgd-t"]["restarts"] == plus["fab-t"]["restarts"] == 1 and plus["fab-t"]["n_target_classes"] == 9
    rand = dict(_opts("rand"))
    assert list(rand) == ["apgd-ce", "apgd-dlr"] and all(o["eot_iter"] == 20 and o["restarts"] == 1 for o in rand.values())
    assert AutoAttack().version == "standard" and AutoAttack(steps=5).version == "custom"


def test_labels_name_a_reduced_ensemble_as_autoattack_style():
    assert AutoAttack().label().startswith("AutoAttack standard (APGD-CE, APGD-T 9 targets, FAB-T 9 targets, Square 5,000 queries")
    reduced = AutoAttack(attacks=("apgd-ce", "apgd-t"), steps=100, n_target_classes=1).label()
    assert reduced == "AutoAttack-style (reduced: APGD-CE, APGD-T 1 target; 100 iterations)"
    assert AutoAttack(version="custom").label().startswith("AutoAttack-style (custom:")
    assert "EOT over 20 draws" in AutoAttack(version="rand").label()
    with pytest.raises(UserError, match="custom"):
        AutoAttack(version="plus", steps=10)
    with pytest.raises(UserError, match="version"):
        AutoAttack(version="fast")


class _Counting(nn.Module):
    """A model that counts its forward passes with input gradients (noise: a randomised model)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3 * 4 * 4, 10)
        self.grad_passes = 0

    def forward(self, x):
        if x.requires_grad:
            self.grad_passes += 1
        return self.lin(x.flatten(1) + 1e-7 * torch.randn_like(x.flatten(1)))


def test_rand_runs_eot():
    torch.manual_seed(0)
    model, x = _Counting(), torch.rand(6, 3, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    threat = make_threat("linf", 1e-9)  # nobody is fooled: every step runs on every row
    rand_ce = dict(AutoAttack(version="rand").members())["apgd-ce"]
    for attack, per_step in ((APGD(steps=3), 1), (APGD(steps=3, eot_iter=20), 20), (rand_ce.__class__(steps=3, eot_iter=rand_ce.eot_iter), 20)):
        model.grad_passes = 0
        attack.perturb(model, x, y, threat, generator=torch.Generator().manual_seed(0), index=torch.arange(6))
        assert model.grad_passes == per_step * (3 + 1)


def test_headline_is_the_per_image_worst_case_of_the_attacks_run():
    """The stage's headline (the ensemble on the images PGD left robust) equals, image by image,
    PGD's robust flags AND those of the ensemble run on every image."""
    from helpers_attacks import adv_model, eval_data

    model = adv_model()
    x, y = eval_data(40)
    threat = make_threat("linf", 8 / 255)
    ens = AutoAttack(attacks=("apgd-ce", "apgd-t"), steps=5, n_target_classes=1)
    pgd = robust_accuracy(model, (x, y), threat, attack="pgd", steps=3, seed=3, progress=False, per_example=True, batch_size=7)
    alone = robust_accuracy(model, (x, y), threat, attack=ens, seed=3, progress=False, per_example=True, batch_size=7)
    head = robust_accuracy(model, (x, y), threat, attack=ens, seed=3, progress=False, per_example=True, batch_size=7,
                           still_robust=pgd["robust_flags"])
    assert torch.equal(head["robust_flags"], pgd["robust_flags"] & alone["robust_flags"])
    assert head["robust_accuracy"] <= min(pgd["robust_accuracy"], alone["robust_accuracy"])
