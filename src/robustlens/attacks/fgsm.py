"""FGSM (Goodfellow et al. 2015) and FGSM with random start (Wong et al. 2020, "Fast is
better than free", Algorithm 3).

Defaults:
    random_start=False: one step of length ``eps`` from the clean image,
        ``x_adv = P(x + eps * direction(grad_x L(x, y)))``;
    random_start=True: start from a uniform point of the ball and take one step of
        ``1.25 * eps`` (Wong et al.'s alpha), then project back onto the ball and [0, 1].
    loss="ce"; ``targeted=True`` descends the loss of target class ``y``.
For L2 / L1 the direction is the threat model's steepest-ascent direction (normalised
gradient / sparse sign), so this is the "fast gradient method".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlens.attacks._common import check_inputs, input_grad, seeded
from robustlens.attacks.losses import get_loss
from robustlens.threat import ThreatModel


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    random_start: bool = False,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
    *,
    targeted: bool = False,
    loss: str = "ce",
) -> Tensor:
    """One-step attack; returns adversarial images inside ``threat``'s ball and [0, 1].

    Never changes the model's train/eval mode and accumulates no parameter gradients.
    """
    check_inputs(model, x, y, threat)
    loss_fn = get_loss(loss, targeted)
    x = x.detach()
    if step_size is None:
        step_size = 1.25 * threat.eps if random_start else threat.eps
    start = threat.random_init(x, seeded(generator, x.device)) if random_start else x
    grad, _, _ = input_grad(model, start, y, loss_fn)
    return threat.project(threat.ascent_step(start, grad, step_size), x).detach()
