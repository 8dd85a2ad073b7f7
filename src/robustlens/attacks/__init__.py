"""Attacks and robustness evaluation.

    from robustlens.threat import make_threat
    from robustlens.attacks import ATTACKS, pgd, robust_accuracy
    x_adv = pgd(model, x, y, make_threat("linf", "8/255"), steps=10)
    x_adv = ATTACKS.get("apgd-t")(steps=50)(model, x, y, make_threat("l2", 0.5))
    robust_accuracy(model, test_set, make_threat("linf", 8 / 255), attack="autoattack")
    x_min = fab(model, x, y, make_threat("l2", 100.0))  # minimal L2 adversarials (FAB)

Every attack is a frozen configuration dataclass registered in :data:`ATTACKS`
(:mod:`robustlens.attacks.base` holds the contract), one module per attack:

=================  ====================================================================
``fgsm``           :mod:`~robustlens.attacks.fgsm`: FGSM, FGSM with random start
``pgd``            :mod:`~robustlens.attacks.pgd`: PGD (ce / cw, targeted, restarts, early stop)
``apgd-ce``,       :mod:`~robustlens.attacks.apgd`: Auto-PGD with the CE or DLR loss, and
``apgd-dlr``,      targeted DLR
``apgd-t``
``fab``, ``fab-t`` :mod:`~robustlens.attacks.fab`: FAB, FAB-T (minimal perturbations)
``square``         :mod:`~robustlens.attacks.square`: Square Attack (black box)
``autoattack``     :mod:`~robustlens.attacks.autoattack`: the AutoAttack-style ensemble
=================  ====================================================================

Each takes float images in [0, 1] (NCHW), int64 labels, a threat model, is batched and
device-agnostic, never changes the model's train/eval mode, and differentiates w.r.t. the
input only. The functions (``pgd(model, x, y, threat, **options)``, ...) are the same attacks
called once; :func:`robust_accuracy` (:mod:`~robustlens.attacks.evaluate`) evaluates any of them.
"""

# in the order of robustlens.names.ATTACKS, which is the registration order
from robustlens.attacks.fgsm import FGSM, fgsm  # noqa: I001 (registers)
from robustlens.attacks.pgd import PGD, pgd
from robustlens.attacks.apgd import APGD, APGDDLR, APGDT, apgd, apgd_ce, apgd_t
from robustlens.attacks.fab import FAB, FABT, fab
from robustlens.attacks.square import Square, square
from robustlens.attacks.autoattack import AutoAttack, autoattack, run_ensemble
from robustlens.attacks.base import ATTACKS, Attack, make_attack, normalize_attack
from robustlens.attacks.evaluate import robust_accuracy

__all__ = [
    "ATTACKS", "Attack", "make_attack", "normalize_attack", "robust_accuracy",
    "FGSM", "PGD", "APGD", "APGDDLR", "APGDT", "FAB", "FABT", "Square", "AutoAttack",
    "fgsm", "pgd", "apgd", "apgd_ce", "apgd_t", "fab", "square", "autoattack", "run_ensemble",
]
