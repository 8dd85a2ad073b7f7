"""Projected gradient descent (Madry et al. 2018, "Towards deep learning models resistant to
adversarial attacks", eq. 2.2; Kurakin et al. 2017).

``x_{t+1} = P_{B(x, eps) ∩ [0,1]^d}(x_t + alpha * direction(grad_x L(x_t, y)))``

Defaults (:class:`PGD`, Madry et al.): ``steps=10``, ``step_size = 2.5 * eps / steps``, uniform
random start inside the ball, ``restarts=1``, cross-entropy loss. Options:

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

from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from robustlens.attacks._common import check_counts, fooled, input_grad, rows, seeded
from robustlens.attacks.base import Attack, HalfSteps, register
from robustlens.attacks.losses import get_loss
from robustlens.threat import ThreatModel

LossFn = Callable[[Tensor, Tensor], Tensor]


@register
@dataclass(frozen=True, kw_only=True)
class PGD(Attack):
    """projected gradient descent (Madry et al. 2018)"""

    name: ClassVar[str] = "pgd"

    steps: int = 10
    step_size: float | None = None  # None: 2.5 * eps / steps
    restarts: int = 1
    loss: str = "ce"
    targeted: bool = False
    random_start: bool = True
    early_stop: bool = False

    def __post_init__(self) -> None:
        check_counts(self.steps, self.restarts, min_steps=0)
        get_loss(self.loss, self.targeted)

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, index: Tensor | None = None
    ) -> Tensor:
        """Random starts are drawn for all rows of ``x`` and then indexed, so a row gets the same
        start whether it is attacked alone or in a larger batch."""
        x = x.detach()
        alpha = 2.5 * threat.eps / max(self.steps, 1) if self.step_size is None else float(self.step_size)
        loss_fn = get_loss(self.loss, self.targeted)
        gen = seeded(generator, x.device)
        xs, ys = rows(x, index), rows(y, index)

        def start_points() -> Tensor:
            return rows(threat.random_init(x, gen), index) if self.random_start else xs

        if self.restarts == 1:
            return self._iterate(model, xs, ys, start_points(), threat, alpha, loss_fn).detach()
        best = xs.clone()
        best_loss = torch.full((xs.shape[0],), float("-inf"), device=x.device)
        best_ok = torch.zeros(xs.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            starts = start_points()
            todo = (~best_ok).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            xr = self._iterate(model, xs[todo], ys[todo], starts[todo], threat, alpha, loss_fn)
            with torch.no_grad():
                logits = model(xr)
                lr = loss_fn(logits, ys[todo])
                ok = fooled(logits, ys[todo], self.targeted)
            better = ok | (lr > best_loss[todo])
            upd = todo[better]
            best[upd] = xr[better]
            best_loss[upd] = lr[better]
            best_ok[upd] = ok[better]
        return best.detach()

    def _iterate(self, model: nn.Module, x: Tensor, y: Tensor, start: Tensor, threat: ThreatModel, alpha: float, loss_fn: LossFn) -> Tensor:
        """One run of ``steps`` projected steps from ``start`` (its final iterate)."""
        xa = start
        if not self.early_stop:
            for _ in range(self.steps):
                grad, _, _ = input_grad(model, xa, y, loss_fn)
                xa = threat.project(threat.ascent_step(xa, grad, alpha), x)
            return xa
        xa = xa.clone()
        act = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.steps):
            grad, logits, _ = input_grad(model, xa[act], y[act], loss_fn)
            keep = ~fooled(logits, y[act], self.targeted)
            if not bool(keep.all()):
                act, grad = act[keep], grad[keep]
                if act.numel() == 0:
                    break
            xa[act] = threat.project(threat.ascent_step(xa[act], grad, alpha), x[act])
        return xa

    def halved(self) -> HalfSteps | None:
        return HalfSteps(self.name, self.steps, replace(self, steps=self.steps // 2)) if self.steps >= 2 else None


def pgd(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
    """PGD (:class:`PGD`, with its ``options``); returns adversarial images inside ``threat``'s
    ball and [0, 1]. Batched and device-agnostic; never changes the model's train/eval mode;
    gradients are taken w.r.t. the input only."""
    return PGD(**options)(model, x, y, threat, generator=generator)
