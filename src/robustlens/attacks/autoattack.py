"""An AutoAttack-style ensemble (Croce & Hein 2020, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", Sec. 4): attacks run in
sequence, each on the points still robust; an example counts as robust only if every attack
failed on it.

Standard version (the one RobustBench reports, :data:`STANDARD`): APGD-CE (100 iterations,
no restarts), APGD-T (targeted DLR, 9 target classes, 100 iterations each), FAB-T (9 target
classes, 100 iterations each, 1 restart, alpha_max = 0.1, eta = 1.05, beta = 0.9; Croce & Hein,
ICML 2020; :mod:`robustlens.attacks.fab`) and Square (5,000 queries, p_init = 0.8). Each member
is built from :data:`~robustlens.attacks.base.ATTACKS` with its own defaults; the ensemble sets
only its budget (``steps``, ``n_queries``, ``n_target_classes``). FAB is a minimum-norm attack:
in the ensemble a point counts as broken by FAB-T only if FAB-T finds a misclassified point
within eps (it stops on an example once it has one). The number of target classes is capped
at K - 1 for APGD-T and FAB-T alike.

Every member gets a fresh generator seeded with the same seed (the initial seed of the
generator the ensemble is given), and every member draws its random numbers for the whole
batch (randomness keyed to an example's row, not to which rows are still attacked), so an
example meets exactly the same randomness as when the member is run alone: the ensemble is
never weaker than any of its members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn

from robustlens.attacks._common import check_counts, fooled, rows
from robustlens.attacks.base import ATTACKS, Attack, HalfSteps, register
from robustlens.errors import UserError
from robustlens.names import ENSEMBLE_MEMBERS
from robustlens.threat import L2, Linf, ThreatModel

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
MEMBERS = ENSEMBLE_MEMBERS


@register
@dataclass(frozen=True, kw_only=True)
class AutoAttack(Attack):
    """AutoAttack-style ensemble: APGD-CE, APGD-T, FAB-T and Square in sequence (Croce & Hein 2020)"""

    name: ClassVar[str] = "autoattack"
    always_checks_steps: ClassVar[bool] = True

    attacks: tuple[str, ...] = STANDARD  # some of MEMBERS, run in this order
    steps: int = 100  # of APGD and FAB (per target class)
    n_queries: int = 5000  # of Square
    n_target_classes: int = 9  # of APGD-T and FAB-T, capped at K - 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "attacks", tuple(self.attacks))
        for a in self.attacks:
            if a not in MEMBERS:
                raise UserError(f"autoattack: unknown member {a!r}; expected some of {', '.join(MEMBERS)}")
        if not self.attacks:
            raise UserError(f"autoattack: attacks: expected some of {', '.join(MEMBERS)}, got none")
        check_counts(self.steps, 1, attack="autoattack")

    def members(self) -> list[tuple[str, Attack]]:
        """Each member as the ensemble runs it: its registered defaults (one run) with the
        ensemble's budget; FAB and FAB-T stop on an example once it has an adversarial within eps."""
        steps = {"steps": self.steps}
        targets = {"steps": self.steps, "n_target_classes": self.n_target_classes}
        fab = {**targets, "stop_within_eps": True}
        options: dict[str, dict[str, Any]] = {
            "apgd-ce": steps, "apgd-dlr": steps, "apgd-t": targets, "fab": fab, "fab-t": fab, "square": {"n_queries": self.n_queries},
        }
        return [(name, ATTACKS.get(name)(**options[name])) for name in self.attacks]

    def evaluate_batch(
        self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(adversarial images, clean-correct flags (N,), {member: robust flags (N,) after that
        member and all before it}). Points misclassified when clean are not attacked."""
        if "square" in self.attacks and not isinstance(threat, (Linf, L2)):
            raise UserError(f"autoattack: Square supports linf and l2, not {threat.norm}; leave it out of the attacks")
        seed = 0 if generator is None else generator.initial_seed()
        x = x.detach()
        with torch.no_grad():
            robust = ~fooled(model(x), y)
        clean = robust.clone()
        x_adv = x.clone()
        after: dict[str, Tensor] = {}
        for name, attack in self.members():
            idx = robust.nonzero().squeeze(1)
            if idx.numel():
                gen = torch.Generator(device=x.device)
                gen.manual_seed(seed)
                adv = attack.perturb(model, x, y, threat, generator=gen, index=idx)
                with torch.no_grad():
                    hit = fooled(model(adv), y[idx])
                x_adv[idx[hit]] = adv[hit]
                robust[idx[hit]] = False
            after[name] = robust.clone()
        return x_adv, clean, after

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, index: Tensor | None = None
    ) -> Tensor:
        """The worst case over the members: the clean image where every member failed."""
        return self.evaluate_batch(model, rows(x, index), rows(y, index), threat, generator=generator)[0]

    def halved(self) -> HalfSteps | None:
        """APGD-CE, the first gradient member, at half the steps."""
        if "apgd-ce" not in self.attacks or self.steps < 2:
            return None
        return HalfSteps("apgd-ce", self.steps, ATTACKS.get("apgd-ce")(steps=self.steps // 2))


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run_ensemble(
    model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, attacks: Sequence[str] | None = None, *, seed: int = 0, **options: Any
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Run the ensemble (:class:`AutoAttack`; ``attacks``: the members, :data:`STANDARD` when
    None) on a validated batch: (adversarial images, clean-correct flags (N,), {attack: robust
    flags (N,) after that attack and all before it})."""
    members = {} if attacks is None else {"attacks": tuple(attacks)}
    return AutoAttack(**members, **options).evaluate_batch(model, x, y, threat, generator=_seeded(seed))


def autoattack(
    model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, attacks: Sequence[str] | None = None, *, seed: int = 0, **options: Any
) -> Tensor:
    """Worst case over the ensemble (standard: APGD-CE, APGD-T, FAB-T, Square).

    Returns adversarial images (the clean image where every attack failed). Use
    :func:`robustlens.attacks.robust_accuracy` with ``attack="autoattack"`` for per-attack
    robust accuracy.
    """
    members = {} if attacks is None else {"attacks": tuple(attacks)}
    return AutoAttack(**members, **options)(model, x, y, threat, generator=_seeded(seed))
