"""Per-example attack losses, each written as the quantity the attacker *maximises*.

* ``ce``: cross-entropy of the true class (Madry et al. 2018, eq. 2.1).
* ``cw``: the margin loss of Carlini & Wagner (2017, f_6 with kappa = infinity):
  ``max_{j != y} z_j - z_y``.
* ``dlr``: Difference of Logits Ratio (Croce & Hein 2020, eq. 6):
  ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``, invariant to shifting and rescaling the
  logits.
* ``dlr_targeted``: targeted DLR (Croce & Hein 2020, eq. 7):
  ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.

Targeted versions of ``ce`` and ``cw`` (``targeted=True``, ``y`` = target class) are
``-CE(z, t)`` and ``z_t - max_{j != t} z_j``: still maximised.
All take logits (N, K) and int64 labels (N,) and return (N,).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlens.errors import UserError

_EPS = 1e-12


def ce(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per example (natural log), to maximise for an untargeted attack."""
    return F.cross_entropy(logits, y, reduction="none")


def _other_max(logits: Tensor, y: Tensor) -> Tensor:
    """max_{j != y} z_j per example."""
    other = logits.scatter(1, y[:, None], float("-inf"))
    return other.amax(1)


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """CW margin ``max_{j != y} z_j - z_y`` (positive once misclassified)."""
    return _other_max(logits, y) - logits.gather(1, y[:, None]).squeeze(1)


cw = margin


def dlr(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of Logits Ratio loss (Croce & Hein 2020, eq. 6). Needs >= 3 classes."""
    if logits.shape[1] < 3:
        raise UserError(f"DLR loss needs at least 3 classes, the model has {logits.shape[1]}")
    z_sorted, _ = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    return -(z_y - _other_max(logits, y)) / (z_sorted[:, -1] - z_sorted[:, -3] + _EPS)


def dlr_targeted(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR loss (Croce & Hein 2020, eq. 7) of true class ``y`` towards ``target``.

    Needs >= 4 classes.
    """
    if logits.shape[1] < 4:
        raise UserError(f"targeted DLR loss needs at least 4 classes, the model has {logits.shape[1]}")
    z_sorted, _ = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + _EPS)


LOSSES = ("ce", "cw", "dlr")


def get_loss(name: str, targeted: bool = False) -> Callable[[Tensor, Tensor], Tensor]:
    """Loss ``f(logits, y) -> (N,)`` to maximise; for ``targeted`` ``y`` is the target class."""
    key = str(name).lower()
    if key == "margin":
        key = "cw"
    if key not in LOSSES:
        raise UserError(f"loss: unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    if key == "ce":
        return (lambda z, t: -ce(z, t)) if targeted else ce
    if key == "cw":
        return (lambda z, t: -margin(z, t)) if targeted else margin
    if targeted:
        raise UserError("loss: use apgd_t for a targeted DLR attack (it needs the true label and the target)")
    return dlr


def is_probability_output(logits: Tensor, atol: float = 1e-4) -> bool:
    """True when every row is non-negative and sums to 1: the model already applies softmax."""
    if logits.dim() != 2 or logits.numel() == 0:
        return False
    return bool((logits >= -atol).all()) and bool(torch.allclose(logits.sum(1), torch.ones_like(logits[:, 0]), atol=atol))
