"""Projected gradient descent (Madry et al. 2018, eq. 2.2 / Kurakin et al. 2017).

``x_{t+1} = P_{B(x, eps) ∩ [0,1]^d}(x_t + alpha * direction(grad_x L(x_t, y)))``

Defaults (Madry et al.): ``steps=10``, ``step_size = 2.5 * eps / steps``, uniform random start
inside the ball, ``restarts=1``, cross-entropy loss. Options:

* ``loss="cw"``: the Carlini-Wagner margin ``max_{j!=y} z_j - z_y`` instead of cross-entropy;
* ``targeted=True``: ``y`` is the target class; the attack descends its loss;
* ``restarts=R``: R runs from independent random starts; each later run attacks only the
  points not yet fooled, and the worst case per example is kept (fooled first, then the
  highest loss);
* ``early_stop=True``: an example stops being updated as soon as it is fooled
  (misclassified, or classified as the target), and costs nothing from then on.

Each run returns its final iterate (as Madry et al. and ART do).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from robustlens.attacks._common import check_counts, check_inputs, fooled, input_grad, seeded
from robustlens.attacks.losses import get_loss
from robustlens.threat import ThreatModel


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    loss: str = "ce",
    targeted: bool = False,
    random_start: bool = True,
    early_stop: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD attack; returns adversarial images inside ``threat``'s ball and [0, 1].

    Batched and device-agnostic; never changes the model's train/eval mode; gradients are
    taken w.r.t. the input only.
    """
    check_inputs(model, x, y, threat)
    check_counts(steps, restarts, min_steps=0)
    return pgd_run(model, x, y, threat, steps, step_size, restarts, get_loss(loss, targeted), targeted, random_start, early_stop, generator)


def _iterate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    start: Tensor,
    threat: ThreatModel,
    steps: int,
    step_size: float,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    targeted: bool,
    early_stop: bool,
) -> Tensor:
    xa = start
    if not early_stop:
        for _ in range(steps):
            grad, _, _ = input_grad(model, xa, y, loss_fn)
            xa = threat.project(threat.ascent_step(xa, grad, step_size), x)
        return xa
    xa = xa.clone()
    act = torch.arange(x.shape[0], device=x.device)
    for _ in range(steps):
        grad, logits, _ = input_grad(model, xa[act], y[act], loss_fn)
        keep = ~fooled(logits, y[act], targeted)
        if not bool(keep.all()):
            act, grad = act[keep], grad[keep]
            if act.numel() == 0:
                break
        xa[act] = threat.project(threat.ascent_step(xa[act], grad, step_size), x[act])
    return xa


def pgd_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    steps: int,
    step_size: float | None,
    restarts: int,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    targeted: bool,
    random_start: bool,
    early_stop: bool,
    generator: torch.Generator | None,
    index: Tensor | None = None,
) -> Tensor:
    """PGD on the rows ``index`` of (x, y) (all rows when None); inputs already validated.

    Random starts are drawn for all rows of ``x`` and then indexed, so a row gets the same
    start whether it is attacked alone or in a larger batch (randomness keyed to an example's row, not to which rows are still attacked).
    """
    x = x.detach()
    alpha = 2.5 * threat.eps / max(steps, 1) if step_size is None else float(step_size)
    gen = seeded(generator, x.device)
    xs = x if index is None else x[index]
    ys = y if index is None else y[index]

    def start_points() -> Tensor:
        if not random_start:
            return xs
        s = threat.random_init(x, gen)
        return s if index is None else s[index]

    if restarts == 1:
        return _iterate(model, xs, ys, start_points(), threat, steps, alpha, loss_fn, targeted, early_stop).detach()

    best = xs.clone()
    best_loss = torch.full((xs.shape[0],), float("-inf"), device=x.device)
    best_ok = torch.zeros(xs.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        starts = start_points()
        todo = (~best_ok).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        xr = _iterate(model, xs[todo], ys[todo], starts[todo], threat, steps, alpha, loss_fn, targeted, early_stop)
        with torch.no_grad():
            logits = model(xr)
            lr = loss_fn(logits, ys[todo])
            ok = fooled(logits, ys[todo], targeted)
        better = ok | (lr > best_loss[todo])
        upd = todo[better]
        best[upd] = xr[better]
        best_loss[upd] = lr[better]
        best_ok[upd] = ok[better]
    return best.detach()
