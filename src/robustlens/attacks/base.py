"""The one shape of an attack, and the registry of every attack.

An attack is a frozen configuration dataclass, called on a batch::

    from robustlens.attacks import ATTACKS
    attack = ATTACKS.get("pgd")(steps=50, restarts=10)    # options are keywords; defaults live in the class
    x_adv = attack(model, x, y, threat, generator=torch.Generator().manual_seed(0))

Every member of :data:`ATTACKS` (names: :data:`robustlens.names.ATTACKS`, in that order) is a
subclass of :class:`Attack`, one module per attack (as torchattacks has one file per attack):

* its options are keyword-only fields whose defaults are the paper's, written once; an unknown
  option is a one-line :class:`~robustlens.errors.UserError` that names it and the valid ones,
  and ``__post_init__`` refuses a bad value before any work;
* ``perturb(model, x, y, threat, *, generator, index)`` is the attack itself, on inputs already
  validated: adversarial images for the rows ``index`` of ``(x, y)`` (all rows when None),
  inside the threat's ball and [0, 1]. Random numbers are drawn for every row of ``x`` and
  then indexed, so an example meets the same randomness whichever rows are attacked (FGSM
  alone draws its random start for the attacked rows only);
* ``__call__`` validates the batch (:func:`~robustlens.attacks._common.check_inputs`), then
  perturbs;
* ``evaluate_batch`` is what :func:`robustlens.attacks.robust_accuracy` runs on one batch: the
  points classified correctly when clean are attacked (the ensemble overrides it);
* ``halved`` gives the attack at half its steps, for the check that more steps never raise
  robust accuracy.

A new attack: a module with an :class:`Attack` subclass decorated with :func:`register`, its
name added to :data:`robustlens.names.ATTACKS`, the module imported in
``robustlens/attacks/__init__.py`` at that name's position.
"""

from __future__ import annotations

import abc
import difflib
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from robustlens.attacks._common import check_inputs, fooled
from robustlens.errors import UserError
from robustlens.registry import Registry, unknown_name
from robustlens.threat import ThreatModel

AttackT = TypeVar("AttackT", bound="Attack")

ATTACKS: Registry[type[Attack]] = Registry("attack", key="--attack")

# other spellings accepted for a name (the command line's and AutoAttack's); "fgsm-rs" is plain
# FGSM here, its random start is the ``random_start`` option
ALIASES = {"aa": "autoattack", "apgd": "apgd-ce", "apgdce": "apgd-ce", "apgdt": "apgd-t", "fabt": "fab-t", "fgsm-rs": "fgsm"}


def register(cls: type[AttackT]) -> type[AttackT]:
    """Class decorator: register an :class:`Attack` under its ``name``."""
    ATTACKS.add(cls.name, cls)
    return cls


def normalize_attack(name: str) -> str:
    """The registered name of attack ``name`` (case, ``_`` for ``-`` and :data:`ALIASES` allowed);
    an unknown name is a :class:`UserError` with the closest match and the valid names."""
    key = str(name).lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in ATTACKS:
        raise unknown_name(ATTACKS.kind, name, ATTACKS.names(), ATTACKS.key)
    return key


def make_attack(name: str, **options: Any) -> Attack:
    """The attack ``name`` configured with ``options`` (each refused if the attack has no such option)."""
    return ATTACKS.get(normalize_attack(name))(**options)


@dataclass(frozen=True, kw_only=True)
class Attack(abc.ABC):
    """Base of every attack: options as fields, ``perturb`` for the work (see the module docstring)."""

    name: ClassVar[str] = ""
    # whether robust_accuracy reruns it at half the steps even when not asked (the ensemble)
    always_checks_steps: ClassVar[bool] = False

    def __new__(cls, *args: Any, **options: Any) -> Attack:
        unknown = [k for k in options if k not in cls.options()]
        if unknown:
            close = difflib.get_close_matches(unknown[0], cls.options(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            names = ", ".join(repr(k) for k in unknown)
            raise UserError(f"{cls.name}: unknown options {names}{hint}; valid: {', '.join(cls.options())}")
        return super().__new__(cls)

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The names of this attack's options."""
        return tuple(f.name for f in fields(cls))

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, index: Tensor | None = None
    ) -> Tensor:
        """Adversarial images for the rows ``index`` of ``(x, y)`` (all when None), after validating
        the batch. Never changes the model's train/eval mode; gradients w.r.t. the input only."""
        check_inputs(model, x, y, threat)
        return self.perturb(model, x, y, threat, generator=generator, index=index)

    @abc.abstractmethod
    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, index: Tensor | None = None
    ) -> Tensor:
        """The attack on validated inputs (every subclass defines it)."""

    def evaluate_batch(
        self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None,
        still_robust: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(adversarial images, clean-correct flags (N,), {name: robust flags (N,)}) on a validated
        batch. Only the points classified correctly when clean are attacked (as AutoAttack does),
        so a point can be robust only if it is clean-correct; ``still_robust`` (N,) restricts the
        attack further to the points an earlier attack left robust (the others count as broken)."""
        with torch.no_grad():
            clean = ~fooled(model(x), y)
        robust = clean if still_robust is None else clean & still_robust
        idx = robust.nonzero().squeeze(1)
        x_adv = x.clone()
        robust = robust.clone()
        if idx.numel():
            adv = self.perturb(model, x, y, threat, generator=generator, index=idx)
            with torch.no_grad():
                hit = fooled(model(adv), y[idx])
            x_adv[idx] = adv
            robust[idx[hit]] = False
        return x_adv, clean, {self.name: robust}

    def halved(self) -> HalfSteps | None:
        """For the steps check: this attack at half its steps, or None for an attack without steps
        to halve (or fewer than 2)."""
        return None


@dataclass(frozen=True)
class HalfSteps:
    """The steps check compares the robust flags after member ``name`` (run with ``steps``
    steps) with those of ``attack``, the same at ``steps // 2``."""

    name: str
    steps: int
    attack: Attack
