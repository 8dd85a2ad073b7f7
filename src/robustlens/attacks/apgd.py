"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", Algorithm 1).

APGD is PGD with momentum and a step size that adapts itself at checkpoints:

* step 0: ``x1 = P(x0 + eta * direction(grad f(x0)))``, ``eta = 2 * eps``;
* step k: ``z = P(x_k + eta * direction(grad f(x_k)))``,
  ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))``, ``alpha = 0.75``;
* checkpoints ``w_j = ceil(p_j * N_iter)`` with ``p_0 = 0``, ``p_1 = 0.22``,
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (:func:`checkpoints`);
* at ``w_j`` the step size is halved and the iterate restarted from the best point so far
  if (condition 1) the loss increased in fewer than ``rho = 0.75`` of the steps since
  ``w_{j-1}``, or (condition 2) the step size was not halved at ``w_{j-1}`` and the best loss
  has not improved since (eq. 8 of the paper; the authors' code uses ``<=`` in condition 1,
  the paper ``<``: we follow the paper).

:class:`APGD` (``apgd-ce``): cross-entropy loss; :class:`APGDDLR` (``apgd-dlr``): the DLR loss
(eq. 6); :class:`APGDT` (``apgd-t``): targeted DLR loss (eq. 7) towards each of the
``n_target_classes = 9`` highest-scoring wrong classes in turn (ranked on the clean image),
on the points still robust. Defaults: ``steps=100``, ``restarts=1``, random start (the
authors' start: a uniform draw rescaled onto the sphere of radius eps), as in the standard
AutoAttack. A restart (and each further target) runs on the points still robust.
``eot_iter`` (AutoAttack's ``rand`` version: 20) averages the input gradient over that many
forward / backward passes of a randomised model (expectation over transformation, Athalye et
al. 2018); the loss and logits of a step are those of its last pass, as in the authors' code.

Success is misclassification for every loss (AutoAttack counts robust accuracy). Unlike the
authors' code an example stops being attacked once misclassified (it cannot become robust
again), which saves time and changes no robust accuracy; the returned image is its first
misclassified iterate, else the iterate of highest loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from robustlens.attacks._common import check_counts, fooled, input_grad, rows, seeded
from robustlens.attacks.base import Attack, HalfSteps, register
from robustlens.attacks.losses import ce, dlr, dlr_targeted, margin
from robustlens.errors import UserError
from robustlens.threat import L2, Linf, ThreatModel

RHO = 0.75
MOMENTUM = 0.75


def checkpoint_fractions() -> list[Fraction]:
    """``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` while <= 1 (exact)."""
    p = [Fraction(0), Fraction(22, 100)]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100))
        if nxt > 1:
            return p
        p.append(nxt)


def checkpoints(n_iter: int) -> list[int]:
    """Checkpoint iterations ``w_j = ceil(p_j * n_iter)`` (distinct, >= 1 except w_0 = 0)."""
    out: list[int] = []
    for p in checkpoint_fractions():
        w = math.ceil(p * n_iter)
        if not out or w > out[-1]:
            out.append(w)
    return out


def _random_start(x: Tensor, threat: ThreatModel, gen: torch.Generator | None) -> Tensor:
    """The authors' start: Linf ``eps * t / max|t|``, t ~ U[-1, 1]; L2 ``eps * g / ||g||``."""
    if isinstance(threat, Linf):
        t = 2 * torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) - 1
        t = t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        return (x + threat.eps * t).clamp(0.0, 1.0)
    if isinstance(threat, L2):
        t = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        t = t / t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        return (x + threat.eps * t).clamp(0.0, 1.0)
    return threat.random_init(x, gen)


@dataclass
class _State:
    """The state of one APGD run, one row per example still attacked (``act``: its row in the run)."""

    act: Tensor
    x: Tensor  # clean images (the centre of the ball)
    y: Tensor
    target: Tensor | None
    x_cur: Tensor
    x_prev: Tensor
    grad: Tensor
    loss_prev: Tensor
    x_best: Tensor
    grad_best: Tensor
    loss_best: Tensor
    eta: Tensor  # step size
    n_incr: Tensor  # steps since the last checkpoint at which the loss increased
    last_loss_best: Tensor  # loss_best at the last checkpoint
    reduced_last: Tensor  # whether eta was halved at the last checkpoint

    def keep(self, keep: Tensor) -> None:
        """Drop every row but ``keep`` from every state tensor."""
        self.act, self.x, self.y = self.act[keep], self.x[keep], self.y[keep]
        self.target = None if self.target is None else self.target[keep]
        self.x_cur, self.x_prev, self.grad, self.loss_prev = self.x_cur[keep], self.x_prev[keep], self.grad[keep], self.loss_prev[keep]
        self.x_best, self.grad_best, self.loss_best = self.x_best[keep], self.grad_best[keep], self.loss_best[keep]
        self.eta, self.n_incr = self.eta[keep], self.n_incr[keep]
        self.last_loss_best, self.reduced_last = self.last_loss_best[keep], self.reduced_last[keep]

    def checkpoint(self, steps_since: int) -> None:
        """Halve the step size and restart from the best point where the loss increased in fewer
        than ``RHO`` of the steps since the last checkpoint (condition 1), or where it was not
        halved last time and the best loss has not improved since (condition 2)."""
        cond1 = self.n_incr < RHO * steps_since
        cond2 = ~self.reduced_last & (self.loss_best <= self.last_loss_best)
        reduce = cond1 | cond2
        if bool(reduce.any()):
            self.eta = torch.where(reduce, self.eta / 2, self.eta)
            self.x_cur[reduce] = self.x_best[reduce]
            self.grad[reduce] = self.grad_best[reduce]
        self.reduced_last = reduce
        self.last_loss_best = self.loss_best.clone()
        self.n_incr.zero_()


def eot_grad(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor], eot_iter: int = 1
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`input_grad` averaged over ``eot_iter`` passes (EOT, Athalye et al. 2018); logits and
    loss of the last pass (Croce & Hein's ``eot_iter``)."""
    grad, logits, loss = input_grad(model, x, y, loss_fn)
    for _ in range(eot_iter - 1):
        g, logits, loss = input_grad(model, x, y, loss_fn)
        grad = grad + g
    return (grad / eot_iter if eot_iter > 1 else grad), logits, loss


def apgd_single(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    start: Tensor,
    threat: ThreatModel,
    steps: int,
    loss_fn: Callable[[Tensor, Tensor, Tensor | None], Tensor],
    target: Tensor | None = None,
    eot_iter: int = 1,
) -> tuple[Tensor, Tensor]:
    """One APGD run from ``start``; returns (adversarial images, fooled flags).

    ``loss_fn(logits, y, target)`` is maximised; success = misclassification of ``y``; each
    gradient is averaged over ``eot_iter`` passes (:func:`eot_grad`).
    """
    n = x.shape[0]
    dev = x.device
    out = start.clone()
    ok = torch.zeros(n, dtype=torch.bool, device=dev)
    if n == 0:
        return out, ok
    ck_set = set(checkpoints(steps)[1:])
    x_cur = start.clone()
    grad, logits, loss = eot_grad(model, x_cur, y, lambda z, yy: loss_fn(z, yy, target), eot_iter)
    hit = fooled(logits, y)
    st = _State(
        act=torch.arange(n, device=dev), x=x, y=y, target=target, x_cur=x_cur, x_prev=x_cur.clone(), grad=grad,
        loss_prev=loss.clone(), x_best=x_cur.clone(), grad_best=grad.clone(), loss_best=loss.clone(),
        eta=torch.full((n,), 2.0 * threat.eps, device=dev, dtype=x.dtype), n_incr=torch.zeros(n, device=dev),
        last_loss_best=loss.clone(), reduced_last=torch.ones(n, dtype=torch.bool, device=dev),
    )
    last_ck = 0
    for k in range(steps + 1):
        if bool(hit.any()):  # record the fooled, drop them from every state tensor
            out[st.act[hit]] = st.x_cur[hit]
            ok[st.act[hit]] = True
            if not bool((~hit).any()):
                return out, ok
            st.keep(~hit)
        if k == steps:
            break
        a = 1.0 if k == 0 else MOMENTUM
        z = threat.project(threat.ascent_step(st.x_cur, st.grad, st.eta), st.x)
        x_new = threat.project(st.x_cur + a * (z - st.x_cur) + (1 - a) * (st.x_cur - st.x_prev), st.x)
        st.x_prev, st.x_cur = st.x_cur, x_new
        st.grad, logits, loss = eot_grad(model, st.x_cur, st.y, lambda zz, yy: loss_fn(zz, yy, st.target), eot_iter)
        hit = fooled(logits, st.y)
        st.n_incr += (loss > st.loss_prev).to(st.n_incr.dtype)
        st.loss_prev = loss
        better = loss > st.loss_best
        if bool(better.any()):  # elementwise selects: no gather / scatter of the masked rows
            b = better.view(-1, *([1] * (x.dim() - 1)))
            st.x_best = torch.where(b, st.x_cur, st.x_best)
            st.grad_best = torch.where(b, st.grad, st.grad_best)
            st.loss_best = torch.where(better, loss, st.loss_best)
        if k + 1 in ck_set:
            st.checkpoint(k + 1 - last_ck)
            last_ck = k + 1
    out[st.act] = st.x_best
    return out, ok


_LOSSES = {"ce": ce, "dlr": dlr, "cw": margin, "margin": margin}


def _loss(name: str) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    key = str(name).lower()
    if key not in _LOSSES:
        raise UserError(f"loss: unknown APGD loss {name!r}; expected ce, dlr or cw")
    fn = _LOSSES[key]
    return lambda z, y, t: fn(z, y)


@dataclass(frozen=True, kw_only=True)
class _Runs(Attack):
    """The options APGD and APGD-T share, and their loop over targets and restarts."""

    steps: int = 100
    restarts: int = 1
    random_start: bool = True
    eot_iter: int = 1  # gradient passes averaged per step (AutoAttack's rand version: 20)

    def __post_init__(self) -> None:
        check_counts(self.steps, self.restarts, attack="APGD")
        if not isinstance(self.eot_iter, int) or self.eot_iter < 1:
            raise UserError(f"eot_iter: expected an integer >= 1, got {self.eot_iter!r}")

    def halved(self) -> HalfSteps | None:
        return HalfSteps(self.name, self.steps, replace(self, steps=self.steps // 2)) if self.steps >= 2 else None

    def _runs(
        self,
        model: nn.Module,
        x: Tensor,
        index: Tensor | None,
        ys: Tensor,
        threat: ThreatModel,
        loss_fn: Callable[[Tensor, Tensor, Tensor | None], Tensor],
        targets: list[Tensor | None],
        gen: torch.Generator | None,
    ) -> Tensor:
        """``restarts`` runs per target (in turn), each on the rows still robust; the first run
        sets every row, a later one only the rows it fools. Starts are drawn for all rows of ``x``."""
        xs = rows(x, index)
        best = xs.clone()
        robust = torch.ones(xs.shape[0], dtype=torch.bool, device=x.device)
        first = True
        for target in targets:
            for _ in range(self.restarts):
                starts = rows(_random_start(x, threat, gen) if self.random_start else x, index)
                todo = robust.nonzero().squeeze(1)
                if todo.numel() == 0:
                    return best
                tt = None if target is None else target[todo]
                adv, ok = apgd_single(model, xs[todo], ys[todo], starts[todo], threat, self.steps, loss_fn, tt, self.eot_iter)
                if first:
                    best[todo] = adv
                    first = False
                else:
                    best[todo[ok]] = adv[ok]
                robust[todo[ok]] = False
        return best


@register
@dataclass(frozen=True, kw_only=True)
class APGD(_Runs):
    """APGD-CE: Auto-PGD on the cross-entropy (Croce & Hein 2020)"""

    name: ClassVar[str] = "apgd-ce"

    loss: str = "ce"  # ce, dlr or cw (margin)

    def __post_init__(self) -> None:
        super().__post_init__()
        _loss(self.loss)

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, index: Tensor | None = None
    ) -> Tensor:
        """Untargeted APGD; restarts on the still robust."""
        x = x.detach()
        return self._runs(model, x, index, rows(y, index), threat, _loss(self.loss), [None], seeded(generator, x.device))


@register
@dataclass(frozen=True, kw_only=True)
class APGDDLR(APGD):
    """APGD-DLR: Auto-PGD on the difference of logits ratio (Croce & Hein 2020, eq. 6)"""

    name: ClassVar[str] = "apgd-dlr"

    loss: str = "dlr"


@register
@dataclass(frozen=True, kw_only=True)
class APGDT(_Runs):
    """APGD-T: targeted DLR towards each of the top wrong classes in turn (Croce & Hein 2020, eq. 7)"""

    name: ClassVar[str] = "apgd-t"

    n_target_classes: int = 9  # capped at K - 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.n_target_classes) < 1:
            raise UserError(f"n_target_classes: expected >= 1, got {self.n_target_classes}")

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, index: Tensor | None = None
    ) -> Tensor:
        """Targets ranked on the clean image: the ``n_target_classes`` highest wrong logits."""
        x = x.detach()
        gen = seeded(generator, x.device)
        ys = rows(y, index)
        with torch.no_grad():
            logits = model(rows(x, index))
        n_cls = logits.shape[1]
        if n_cls < 4:
            raise UserError(f"APGD-T needs a model with at least 4 classes, this one has {n_cls}")
        n_t = min(int(self.n_target_classes), n_cls - 1)
        ranked = logits.scatter(1, ys[:, None], float("-inf")).argsort(1, descending=True)[:, :n_t]
        return self._runs(model, x, index, ys, threat, dlr_targeted, [ranked[:, j] for j in range(n_t)], gen)


def apgd(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
    """Untargeted APGD (:class:`APGD`) with loss ``ce`` (APGD-CE, the default), ``dlr`` (APGD-DLR) or ``cw``."""
    return APGD(**options)(model, x, y, threat, generator=generator)


def apgd_ce(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
    """APGD-CE (Croce & Hein 2020): 100 iterations, 1 run, by default."""
    return APGD(**options, loss="ce")(model, x, y, threat, generator=generator)


def apgd_t(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
    """APGD-T (:class:`APGDT`, Croce & Hein 2020): targeted DLR towards each of the top-9 wrong classes."""
    return APGDT(**options)(model, x, y, threat, generator=generator)
