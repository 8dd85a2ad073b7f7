"""An AutoAttack-style ensemble (Croce & Hein 2020, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", Sec. 4): attacks run in
sequence, each on the points still robust; an example counts as robust only if every attack
failed on it.

The authors' versions (``AutoAttack.set_version`` of their code; :data:`VERSIONS`):

* ``standard`` (the one RobustBench reports, :data:`STANDARD`): APGD-CE (100 iterations, no
  restarts), APGD-T (targeted DLR, 9 target classes, 100 iterations each), FAB-T (9 target
  classes, 100 iterations each, 1 restart, alpha_max = 0.1, eta = 1.05, beta = 0.9; Croce & Hein,
  ICML 2020; :mod:`robustlens.attacks.fab`) and Square (5,000 queries, p_init = 0.8);
* ``plus``: APGD-CE and APGD-DLR with 5 restarts, FAB with 5 restarts, Square, APGD-T and FAB-T
  (9 targets each);
* ``rand``: APGD-CE and APGD-DLR with the gradient averaged over 20 draws (EOT), for randomised
  models;
* ``custom``: the members and budget given (``attacks``, ``steps``, ``n_queries``,
  ``n_target_classes``). A custom ensemble weaker than the standard one is labelled
  "AutoAttack-style (reduced: ...)" (:meth:`AutoAttack.label`), never "AutoAttack".

Each member is built from :data:`~robustlens.attacks.base.ATTACKS` with its own defaults and
the version's options. The L1 standard version of the authors (APGD with 5 restarts and larger
radii, APGD-T with 5 targets) is not implemented. FAB is a minimum-norm attack:
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

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn

from robustlens.attacks._common import check_counts, fooled, rows
from robustlens.attacks.base import ATTACKS, Attack, HalfSteps, register
from robustlens.errors import UserError
from robustlens.names import AUTOATTACK_VERSIONS, ENSEMBLE_MEMBERS
from robustlens.threat import L2, Linf, ThreatModel

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
MEMBERS = ENSEMBLE_MEMBERS
VERSIONS = AUTOATTACK_VERSIONS

# The authors' versions (auto-attack ``AutoAttack.set_version``, Linf / L2): each member's options
# on top of its registered defaults (APGD and FAB: 100 iterations). FAB-T always runs 1 restart
# (``run_standard_evaluation`` sets it), APGD-T 1 restart; ``plus`` gives APGD and FAB 5 restarts.
_VERSION_MEMBERS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "standard": (("apgd-ce", {"restarts": 1}), ("apgd-t", {"restarts": 1, "n_target_classes": 9}),
                 ("fab-t", {"restarts": 1, "n_target_classes": 9}), ("square", {"n_queries": 5000})),
    "plus": (("apgd-ce", {"restarts": 5}), ("apgd-dlr", {"restarts": 5}), ("fab", {"restarts": 5}),
             ("square", {"n_queries": 5000}), ("apgd-t", {"restarts": 1, "n_target_classes": 9}),
             ("fab-t", {"restarts": 1, "n_target_classes": 9})),
    "rand": (("apgd-ce", {"restarts": 1, "eot_iter": 20}), ("apgd-dlr", {"restarts": 1, "eot_iter": 20})),
}
_SHORT = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab": "FAB", "fab-t": "FAB-T", "square": "Square"}


def _describe(name: str, attack: Attack) -> str:
    """One member as a label names it: ``APGD-T 9 targets``, ``APGD-CE 5 restarts, EOT 20``, ..."""
    opts = asdict(attack)
    parts = [_SHORT[name]]
    if "n_target_classes" in opts and name.endswith("-t"):
        parts.append(f"{opts['n_target_classes']} target{'s' if opts['n_target_classes'] != 1 else ''}")
    if "n_queries" in opts:
        parts.append(f"{opts['n_queries']:,} queries")
    if opts.get("restarts", 1) > 1:
        parts.append(f"{opts['restarts']} restarts")
    if opts.get("eot_iter", 1) > 1:
        parts.append(f"EOT over {opts['eot_iter']} draws")
    return " ".join(parts)


@register
@dataclass(frozen=True, kw_only=True)
class AutoAttack(Attack):
    """AutoAttack (Croce & Hein 2020) in the authors' versions, or an AutoAttack-style custom ensemble.

    ``version``: ``standard`` (APGD-CE, APGD-T 9 targets, FAB-T 9 targets, Square 5,000 queries),
    ``plus`` (APGD-CE and APGD-DLR with 5 restarts, FAB 5 restarts, Square, APGD-T, FAB-T),
    ``rand`` (APGD-CE and APGD-DLR with EOT over 20 draws, for randomised models) or ``custom``
    (``attacks`` with ``steps``, ``n_queries``, ``n_target_classes``). As in the authors' code the
    member options are refused unless the version is ``custom``; with none given and no version
    the version is ``standard``, with some given ``custom``. :meth:`label` names what ran: a
    custom ensemble weaker than the standard one is "AutoAttack-style (reduced: ...)"."""

    name: ClassVar[str] = "autoattack"
    always_checks_steps: ClassVar[bool] = True

    version: str | None = None  # one of VERSIONS; None: standard, or custom when a member option is given
    attacks: tuple[str, ...] | None = None  # custom: some of MEMBERS, run in this order (default STANDARD)
    steps: int | None = None  # custom: of APGD and FAB (per target class); default 100
    n_queries: int | None = None  # custom: of Square; default 5000
    n_target_classes: int | None = None  # custom: of APGD-T and FAB-T, capped at K - 1; default 9

    def __post_init__(self) -> None:
        custom = {k: v for k, v in (("attacks", self.attacks), ("steps", self.steps), ("n_queries", self.n_queries),
                                    ("n_target_classes", self.n_target_classes)) if v is not None}
        version = self.version if self.version is not None else ("custom" if custom else "standard")
        if version not in VERSIONS:
            raise UserError(f"autoattack: unknown version {version!r}; expected one of {', '.join(VERSIONS)}")
        if version != "custom" and custom:
            raise UserError(f"autoattack: {', '.join(custom)} set the members of version 'custom' only; "
                            f"version {version!r} runs the authors' members")
        object.__setattr__(self, "version", version)
        if version == "custom":
            defaults = {"attacks": STANDARD, "steps": 100, "n_queries": 5000, "n_target_classes": 9}
            for k, v in defaults.items():
                object.__setattr__(self, k, v if custom.get(k) is None else custom[k])
            object.__setattr__(self, "attacks", tuple(self.attacks))
            for a in self.attacks:
                if a not in MEMBERS:
                    raise UserError(f"autoattack: unknown member {a!r}; expected some of {', '.join(MEMBERS)}")
            if not self.attacks:
                raise UserError(f"autoattack: attacks: expected some of {', '.join(MEMBERS)}, got none")
            check_counts(self.steps, 1, attack="autoattack")

    def members(self) -> list[tuple[str, Attack]]:
        """Each member as the ensemble runs it: its registered defaults with the version's options
        (custom: the ensemble's budget); FAB and FAB-T stop on an example once it has an adversarial within eps."""
        if self.version == "custom":
            steps = {"steps": self.steps}
            targets = {"steps": self.steps, "n_target_classes": self.n_target_classes}
            options: dict[str, dict[str, Any]] = {"apgd-ce": steps, "apgd-dlr": steps, "apgd-t": targets, "fab": targets,
                                                  "fab-t": targets, "square": {"n_queries": self.n_queries}}
            chosen = [(name, options[name]) for name in self.attacks]
        else:
            chosen = list(_VERSION_MEMBERS[self.version])
        return [(name, ATTACKS.get(name)(**opts, **({"stop_within_eps": True} if name.startswith("fab") else {})))
                for name, opts in chosen]

    def is_reduced(self) -> bool:
        """Whether this ensemble is weaker than the standard version: a standard member missing, or
        a smaller budget (iterations, targets, queries) than the standard one's."""
        if self.version != "custom":
            return False
        have = dict(self.members())
        for name, attack in AutoAttack(version="standard").members():
            mine = have.get(name)
            if mine is None or any(asdict(mine)[k] < v for k, v in asdict(attack).items()
                                   if k in ("steps", "n_target_classes", "n_queries")):
                return True
        return False

    def label(self) -> str:
        """What ran, as a number's label: "AutoAttack standard (APGD-CE, APGD-T 9 targets, ...)",
        or "AutoAttack-style (reduced: APGD-CE, APGD-T 1 target; 100 iterations)" for a cut-down
        custom ensemble, so that nobody quotes it as AutoAttack."""
        members = self.members()
        desc = ", ".join(_describe(n, a) for n, a in members)
        iters = sorted({asdict(a)["steps"] for n, a in members if "steps" in asdict(a)})
        if iters:
            desc += f"; {'/'.join(str(i) for i in iters)} iterations"
        if self.version != "custom":
            return f"AutoAttack {self.version} ({desc})"
        return f"AutoAttack-style ({'reduced' if self.is_reduced() else 'custom'}: {desc})"

    def evaluate_batch(
        self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None,
        still_robust: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(adversarial images, clean-correct flags (N,), {member: robust flags (N,) after that
        member and all before it}). Points misclassified when clean are not attacked, nor those
        ``still_robust`` (N,) marks as broken by an earlier attack (as AutoAttack's robust flags)."""
        if "square" in dict(self.members()) and not isinstance(threat, (Linf, L2)):
            raise UserError(f"autoattack: Square supports linf and l2, not {threat.norm}; leave it out of the attacks")
        seed = 0 if generator is None else generator.initial_seed()
        x = x.detach()
        with torch.no_grad():
            clean = ~fooled(model(x), y)
        robust = clean.clone() if still_robust is None else clean & still_robust
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
        first = dict(self.members()).get("apgd-ce")
        if first is None or first.steps < 2:
            return None
        return first.halved()


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
