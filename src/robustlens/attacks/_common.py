"""Shared plumbing of the attacks: input validation, input-only gradients, success tests, rows.

Gradients are taken with ``torch.autograd.grad`` w.r.t. the input only: parameters keep
their ``requires_grad`` but the engine never computes weight gradients (conv backward is
asked for grad_input only) and no ``.grad`` is accumulated. This is what makes these
attacks faster than ART and foolbox, which call ``loss.backward()``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from robustlens.errors import UserError
from robustlens.progress import pulse
from robustlens.threat import ThreatModel


def check_counts(steps: int, restarts: int, *, min_steps: int = 1, attack: str = "") -> None:
    """``steps`` (at least ``min_steps``) and ``restarts`` (at least 1) must be integers;
    ``attack`` names the attack that needs a step in the message."""
    if not isinstance(steps, int) or steps < min_steps:
        need = f"{attack} needs at least {min_steps} step: " if attack and min_steps == 1 else ""
        raise UserError(f"--steps: {need}expected an integer >= {min_steps}, got {steps!r}")
    if not isinstance(restarts, int) or restarts < 1:
        raise UserError(f"--restarts: expected an integer >= 1, got {restarts!r}")


def check_inputs(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, num_classes: int | None = None) -> int:
    """Validate a batch before any attack work; return the number of classes.

    Raises :class:`UserError` for images outside [0, 1], non-float images, labels of the
    wrong shape or out of range, or a threat that is not a :class:`ThreatModel`.
    """
    if not isinstance(threat, ThreatModel):
        raise UserError(f"threat: expected a robustlens.threat model (make_threat('linf', 8/255)), got {type(threat).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise UserError(f"images: expected a float tensor in [0, 1], got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() < 2:
        raise UserError(f"images: expected a batch (N, C, H, W), got shape {tuple(x.shape)}")
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],):
        raise UserError(f"labels: expected shape ({x.shape[0]},), got {tuple(getattr(y, 'shape', ()))}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise UserError(f"labels: expected integer class indices, got {y.dtype}")
    if x.numel() and (not bool(torch.isfinite(x).all()) or float(x.min()) < 0.0 or float(x.max()) > 1.0):
        lo, hi = float(x.min()), float(x.max())
        raise UserError(f"images: expected values in [0, 1] (models normalise themselves), got range [{lo:.4g}, {hi:.4g}]")
    if num_classes is None:
        num_classes = getattr(model, "num_classes", None)
        if not isinstance(num_classes, int):
            with torch.no_grad():
                num_classes = int(model(x[:1]).shape[1])
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise UserError(f"labels: expected values in 0..{num_classes - 1}, got {int(y.min())}..{int(y.max())}")
    return num_classes


def input_grad(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(gradient of ``sum(loss_fn(model(x), y))`` w.r.t. ``x``, logits, per-example loss)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    pulse()  # the heartbeat of a long attack (robustlens.progress)
    return grad, logits.detach(), loss.detach()


def fooled(logits: Tensor, y: Tensor, targeted: bool = False) -> Tensor:
    """Per-example attack success: misclassified (untargeted) or classified as ``y`` (targeted)."""
    pred = logits.argmax(1)
    return pred == y if targeted else pred != y


def rows(t: Tensor, index: Tensor | None) -> Tensor:
    """The rows ``index`` of ``t`` (all of ``t`` when ``index`` is None)."""
    return t if index is None else t[index]


def seeded(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """A generator usable on ``device`` (a CPU generator cannot feed CUDA draws)."""
    if generator is None or generator.device.type == device.type:
        return generator
    g = torch.Generator(device=device)
    g.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    return g
