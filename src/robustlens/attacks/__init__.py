"""Attacks and robustness evaluation.

    from robustlens.threat import make_threat
    from robustlens.attacks import pgd, robust_accuracy
    x_adv = pgd(model, x, y, make_threat("linf", "8/255"), steps=10)
    robust_accuracy(model, test_set, make_threat("linf", 8 / 255), attack="autoattack")
    x_min = fab(model, x, y, make_threat("l2", 100.0))  # minimal L2 adversarials (FAB)

Every attack takes float images in [0, 1] (NCHW), int64 labels, a threat model, is batched
and device-agnostic, never changes the model's train/eval mode, and differentiates w.r.t.
the input only.
"""

from robustlens.attacks.apgd import apgd, apgd_ce, apgd_t
from robustlens.attacks.autoattack import autoattack
from robustlens.attacks.evaluate import ATTACKS, robust_accuracy
from robustlens.attacks.fab import fab
from robustlens.attacks.fgsm import fgsm
from robustlens.attacks.pgd import pgd
from robustlens.attacks.square import square

__all__ = ["ATTACKS", "apgd", "apgd_ce", "apgd_t", "autoattack", "fab", "fgsm", "pgd", "robust_accuracy", "square"]
