"""FGSM (Goodfellow et al. 2015, "Explaining and harnessing adversarial examples") and FGSM
with random start (Wong et al. 2020, "Fast is better than free", Algorithm 3).

Defaults (:class:`FGSM`):
    random_start=False: one step of length ``eps`` from the clean image,
        ``x_adv = P(x + eps * direction(grad_x L(x, y)))``;
    random_start=True: start from a uniform point of the ball and take one step of
        ``1.25 * eps`` (Wong et al.'s alpha), then project back onto the ball and [0, 1].
    loss="ce"; ``targeted=True`` descends the loss of target class ``y``.
For L2 / L1 the direction is the threat model's steepest-ascent direction (normalised
gradient / sparse sign), so this is the "fast gradient method".

The random start is drawn for the attacked rows only (``x[index]``), not for every row of
``x`` as the other attacks do: the numbers :func:`robustlens.attacks.robust_accuracy` has
always reported for ``fgsm`` with ``random_start=True`` depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from robustlens.attacks._common import input_grad, rows, seeded
from robustlens.attacks.base import Attack, register
from robustlens.attacks.losses import get_loss
from robustlens.threat import ThreatModel


@register
@dataclass(frozen=True, kw_only=True)
class FGSM(Attack):
    """fast gradient sign method, one step (Goodfellow et al. 2015; random start: Wong et al. 2020)"""

    name: ClassVar[str] = "fgsm"

    random_start: bool = False
    step_size: float | None = None  # None: eps, or 1.25 eps with a random start
    targeted: bool = False
    loss: str = "ce"

    def __post_init__(self) -> None:
        get_loss(self.loss, self.targeted)

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, index: Tensor | None = None
    ) -> Tensor:
        loss_fn = get_loss(self.loss, self.targeted)
        x, y = rows(x.detach(), index), rows(y, index)
        step_size = self.step_size
        if step_size is None:
            step_size = 1.25 * threat.eps if self.random_start else threat.eps
        start = threat.random_init(x, seeded(generator, x.device)) if self.random_start else x
        grad, _, _ = input_grad(model, start, y, loss_fn)
        return threat.project(threat.ascent_step(start, grad, step_size), x).detach()


def fgsm(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
    """One-step attack (:class:`FGSM`, with its ``options``); returns adversarial images inside
    ``threat``'s ball and [0, 1]. Never changes the model's train/eval mode and accumulates no
    parameter gradients."""
    return FGSM(**options)(model, x, y, threat, generator=generator)
