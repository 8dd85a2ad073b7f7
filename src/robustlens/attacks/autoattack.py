"""An AutoAttack-style ensemble (Croce & Hein 2020, Sec. 4): attacks run in sequence, each on
the points still robust; an example counts as robust only if every attack failed on it.

Standard version (the one RobustBench reports, :data:`STANDARD`): APGD-CE (100 iterations,
no restarts), APGD-T (targeted DLR, 9 target classes, 100 iterations each), FAB-T (9 target
classes, 100 iterations each, 1 restart, alpha_max = 0.1, eta = 1.05, beta = 0.9; Croce & Hein,
ICML 2020; :mod:`robustlens.attacks.fab`) and Square (5,000 queries, p_init = 0.8). FAB is a
minimum-norm attack: in the ensemble a point counts as broken by FAB-T only if FAB-T finds a
misclassified point within eps (it stops on an example once it has one). The number of
target classes is capped at K - 1 for APGD-T and FAB-T alike.

Every member gets a fresh generator seeded with ``seed``, and every member draws its random
numbers for the whole batch (randomness keyed to an example's row, not to which rows are still attacked), so an example meets exactly the
same randomness as when the member is run alone: the ensemble is never weaker than any of
its members.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlens.attacks._common import check_inputs, fooled
from robustlens.attacks.apgd import apgd_run, apgd_t_run
from robustlens.attacks.fab import fab_run
from robustlens.attacks.square import square_run
from robustlens.errors import UserError
from robustlens.threat import L2, Linf, ThreatModel

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
MEMBERS = ("apgd-ce", "apgd-t", "apgd-dlr", "fab", "fab-t", "square")


def _member(name: str, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, index: Tensor, steps: int, n_queries: int, n_target_classes: int, seed: int) -> Tensor:
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)
    if name == "apgd-ce":
        return apgd_run(model, x, y, threat, steps, 1, "ce", True, gen, index)
    if name == "apgd-dlr":
        return apgd_run(model, x, y, threat, steps, 1, "dlr", True, gen, index)
    if name == "apgd-t":
        return apgd_t_run(model, x, y, threat, steps, n_target_classes, 1, True, gen, index)
    if name in ("fab", "fab-t"):
        return fab_run(
            model, x, y, threat, steps, name == "fab-t", n_target_classes, 1, 0.1, 1.05, 0.9, gen, index,
            stop_within_eps=True, clamp_targets=True,
        )
    return square_run(model, x, y, threat, n_queries, 0.8, gen, index)


def run_ensemble(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    attacks: tuple[str, ...] | list[str] = STANDARD,
    steps: int = 100,
    n_queries: int = 5000,
    n_target_classes: int = 9,
    seed: int = 0,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Run the ensemble on a batch (inputs validated).

    Returns (adversarial images, clean-correct flags (N,), {attack: robust flags (N,) after
    that attack and all before it}). Points misclassified when clean are not attacked.
    """
    attacks = tuple(attacks)
    for a in attacks:
        if a not in MEMBERS:
            raise UserError(f"autoattack: unknown member {a!r}; expected some of {', '.join(MEMBERS)}")
    if "square" in attacks and not isinstance(threat, (Linf, L2)):
        raise UserError(f"autoattack: Square supports linf and l2, not {threat.norm}; leave it out of the attacks")
    x = x.detach()
    with torch.no_grad():
        robust = ~fooled(model(x), y)
    clean = robust.clone()
    x_adv = x.clone()
    after: dict[str, Tensor] = {}
    for name in attacks:
        idx = robust.nonzero().squeeze(1)
        if idx.numel():
            adv = _member(name, model, x, y, threat, idx, steps, n_queries, n_target_classes, seed)
            with torch.no_grad():
                hit = fooled(model(adv), y[idx])
            x_adv[idx[hit]] = adv[hit]
            robust[idx[hit]] = False
        after[name] = robust.clone()
    return x_adv, clean, after


def autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    attacks: tuple[str, ...] | list[str] = STANDARD,
    steps: int = 100,
    n_queries: int = 5000,
    n_target_classes: int = 9,
    seed: int = 0,
) -> Tensor:
    """Worst case over the ensemble (standard: APGD-CE, APGD-T, FAB-T, Square).

    Returns adversarial images (the clean image where every attack failed). Use
    :func:`robustlens.attacks.robust_accuracy` with ``attack="autoattack"`` for per-attack
    robust accuracy.
    """
    check_inputs(model, x, y, threat)
    return run_ensemble(model, x, y, threat, attacks, steps, n_queries, n_target_classes, seed)[0]
