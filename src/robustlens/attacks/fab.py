"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020, "Minimally distorted
Adversarial Examples with a Fast Adaptive Boundary Attack", Algorithm 1), untargeted and
targeted (FAB-T, as in AutoAttack's standard version), for the Linf, L2 and L1 threat models.

FAB looks for the *smallest* perturbation that changes the decision. At an iterate
``x_i`` it linearises the classifier: the decision boundary between the true class ``c`` and
a class ``s`` becomes the hyperplane
``pi_s = {z : f_s(x_i) - f_c(x_i) + <grad f_s(x_i) - grad f_c(x_i), z - x_i> = 0}``, where

* untargeted (eq. 5): ``s = argmin_{l != c} |f_l(x_i) - f_c(x_i)| / ||grad f_l(x_i) - grad f_c(x_i)||_q``
  (the closest linearised boundary; ``q`` is the dual norm of ``p``);
* targeted (FAB-T): ``s`` is the target class ``t``.

Then (Alg. 1, lines 6-12)::

    delta   = proj_p(x_i,    pi_s, C) - x_i          (C = [0, 1]^d)
    delta_o = proj_p(x_orig, pi_s, C) - x_orig
    alpha   = min(||delta||_p / (||delta||_p + ||delta_o||_p), alpha_max)
    x_{i+1} = P_C((1 - alpha)(x_i + eta delta) + alpha (x_orig + eta delta_o))
    if x_{i+1} is misclassified: keep it if it is the smallest adversarial so far, then
        x_{i+1} = (1 - beta) x_orig + beta x_{i+1}     (the step back towards x_orig)

``proj_p(z, pi, C)`` is the minimal-``p``-norm move from ``z`` onto the intersection of the
hyperplane with the box (Sec. 3.1; :func:`project_hyperplane_box`). The first run starts at
``x_orig``; restart ``j >= 2`` starts at a random point at distance ``min(u, eps) / 2`` from
``x_orig`` (``u``: the smallest adversarial norm found so far, infinite if none).
Defaults are AutoAttack's: ``steps=100``, ``restarts=1``, ``alpha_max=0.1``, ``eta=1.05``,
``beta=0.9``; FAB-T attacks the ``n_target_classes=9`` highest-scoring wrong classes
(ranked on the clean image) in turn.

Success is misclassification, for FAB-T too (as in AutoAttack, where FAB-T only serves to
count robust accuracy: the target picks the hyperplane, any wrong class counts).

Contract of :func:`fab` (per example): the smallest-norm misclassified point found by the
runs made, if its norm is ``<= threat.eps``; otherwise (nothing found within eps, or the
clean image already misclassified) ``x`` itself. Restarts and target classes are tried in
turn only on the examples with no adversarial within eps yet (AutoAttack's rule), so with a
large eps (``Linf(1)``, a large L2 eps) the result is the first run's minimal adversarial.
Every returned point lies in [0, 1] and in the eps ball, and every returned point that
differs from ``x`` is misclassified by ``model`` on the returned batch (checked with one
final forward pass). The untargeted attack needs the full Jacobian (one backward per class
and iteration); FAB-T needs one backward per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from robustlens.attacks._common import check_counts, fooled, input_grad, rows, seeded
from robustlens.attacks.base import Attack, register
from robustlens.errors import UserError
from robustlens.threat import L1, L2, Linf, ThreatModel

_TINY = 1e-12


def _norm_of(threat: ThreatModel) -> str:
    for cls, name in ((Linf, "linf"), (L2, "l2"), (L1, "l1")):
        if isinstance(threat, cls):
            return name
    raise UserError(f"threat: FAB supports the linf, l2 and l1 threat models, not {getattr(threat, 'norm', type(threat).__name__)!r}")


def _lengths(flat: Tensor, norm: str) -> Tensor:
    if norm == "linf":
        return flat.abs().amax(1)
    if norm == "l2":
        return flat.norm(dim=1)
    return flat.abs().sum(1)


def _dual_lengths(flat: Tensor, norm: str) -> Tensor:
    """``||w||_q`` with ``1/p + 1/q = 1`` (Linf <-> L1, L2 <-> L2), over the last dim."""
    if norm == "linf":
        return flat.abs().sum(-1)
    if norm == "l2":
        return flat.norm(dim=-1)
    return flat.abs().amax(-1)


def _argsort(key: Tensor, descending: bool = False) -> Tensor:
    """Row-wise argsort; numpy's on CPU (about 4x faster than torch.sort there, measured on
    (100, 3072) float32). Ties need no stable order: at tied breakpoints every order gives
    the same reachable value (``|w_j| room_j == key_j * slope_j`` there)."""
    if key.device.type == "cpu" and key.dtype in (torch.float32, torch.float64):
        k = -key if descending else key
        return torch.from_numpy(np.argsort(k.detach().numpy(), axis=1))
    return key.argsort(1, descending=descending)


def project_hyperplane_box(z: Tensor, w: Tensor, r: Tensor, norm: str) -> Tensor:
    """Minimal-``norm`` ``delta`` with ``<w, delta> = r`` and ``0 <= z + delta <= 1``.

    ``z``, ``w``: (N, d); ``r``: (N,). This is ``proj_p(z, pi, C) - z`` of FAB (Croce & Hein
    2020, Sec. 3.1 and the appendix) with the hyperplane written relative to ``z``. Every
    coordinate moves in the direction ``sign(r w_j)`` and has ``room_j`` before hitting the box
    (``1 - z_j`` upwards, ``z_j`` downwards). The reachable ``<w, delta>`` is a nondecreasing
    piecewise linear function of one scalar, found exactly by sorting its breakpoints:

    * Linf: ``delta_j = s_j min(t, room_j)``, breakpoints ``room_j``;
    * L2 (KKT): ``delta_j = s_j min(lambda |w_j|, room_j)``, breakpoints ``room_j / |w_j|``;
    * L1: fill coordinates in order of decreasing ``|w_j|`` (each up to its room).

    When the hyperplane does not meet the box, every coordinate moves by its whole room (the
    point of the box closest to the hyperplane in the sense of ``<w, .>``).
    """
    sgn_r = torch.sign(r)
    ws = w * sgn_r[:, None]  # now <ws, delta'> must reach |r| >= 0
    a = ws.abs()
    direction = torch.sign(ws)
    room = torch.where(ws > 0, 1.0 - z, z).clamp_min(0.0)
    need = r.abs()
    n, d = w.shape
    full = a * room  # <|w|, ...> gained by a saturated coordinate
    if norm == "l1":
        order = _argsort(a, descending=True)
        a_s, room_s = a.gather(1, order), room.gather(1, order)
        gain = (a_s * room_s).cumsum(1)
        enough = gain >= need[:, None]
        k = torch.where(enough.any(1), enough.to(torch.int8).argmax(1), torch.full_like(need, d, dtype=torch.long))
        zero = torch.zeros(n, 1, device=w.device, dtype=w.dtype)
        before = torch.cat([zero, gain], 1).gather(1, k[:, None])
        kk = k.clamp_max(d - 1)[:, None]
        part = ((need[:, None] - before) / a_s.gather(1, kk).clamp_min(_TINY)).clamp_min(0.0)
        part = torch.minimum(part, room_s.gather(1, kk))
        pos = torch.arange(d, device=w.device)[None, :]
        step_s = torch.where(pos < k[:, None], room_s, torch.where(pos == k[:, None], part, torch.zeros_like(room_s)))
        step = torch.zeros_like(room).scatter(1, order, step_s)
        return direction * step
    if norm == "linf":
        key, slope = torch.where(a > 0, room, torch.zeros_like(room)), a
    else:
        key, slope = torch.where(a > 0, room / a.clamp_min(_TINY), torch.zeros_like(room)), a * a
    order = _argsort(key)
    key_s = key.gather(1, order)
    full_c = full.gather(1, order).cumsum(1)  # gain of the coordinates saturated at key_s[k]
    slope_rest = slope.sum(1, keepdim=True) - slope.gather(1, order).cumsum(1)  # slope of the others
    g = full_c + key_s * slope_rest  # reachable <|w|, delta> at scalar = key_s[k]
    enough = g >= need[:, None]
    feasible = enough.any(1)
    k = torch.where(feasible, enough.to(torch.int8).argmax(1), torch.full_like(need, d, dtype=torch.long))
    zero = torch.zeros(n, 1, device=w.device, dtype=w.dtype)
    c_prev = torch.cat([zero, full_c], 1).gather(1, k[:, None]).squeeze(1)
    s_prev = torch.cat([slope.sum(1, keepdim=True), slope_rest], 1).gather(1, k[:, None]).squeeze(1)
    scalar = (need - c_prev) / s_prev.clamp_min(_TINY)
    scalar = torch.where(feasible, scalar.clamp_min(0.0), torch.full_like(scalar, float("inf")))
    if norm == "linf":
        step = torch.minimum(scalar[:, None].expand_as(room), room)
    else:
        step = torch.minimum(scalar[:, None] * a, room)
    step = torch.where(a > 0, step, torch.zeros_like(step))
    return direction * step


def _hyperplane(model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, norm: str) -> tuple[Tensor, Tensor, Tensor]:
    """(logits, w (N, d), b (N,)): the linearised boundary ``b + <w, z - x> = 0`` chosen at ``x``."""
    if target is not None:
        def gap(z: Tensor, t: Tensor) -> Tensor:
            return z.gather(1, t[:, None]).squeeze(1) - z.gather(1, y[:, None]).squeeze(1)

        grad, logits, b = input_grad(model, x, target, gap)
        return logits, grad.flatten(1), b
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        k = logits.shape[1]
        rows = []
        for j in range(k):
            (g,) = torch.autograd.grad(logits[:, j].sum(), xg, retain_graph=j < k - 1)
            rows.append(g.flatten(1))
    logits = logits.detach()
    jac = torch.stack(rows, 1)  # (N, K, d)
    ar = torch.arange(x.shape[0], device=x.device)
    f_diff = logits - logits[ar, y][:, None]
    g_diff = jac - jac[ar, y][:, None, :]
    dist = f_diff.abs() / (_dual_lengths(g_diff, norm) + _TINY)
    dist[ar, y] = float("inf")
    s = dist.argmin(1)
    return logits, g_diff[ar, s], f_diff[ar, s]


def _fab_single(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    start: Tensor,
    norm: str,
    eps: float,
    steps: int,
    target: Tensor | None,
    alpha_max: float,
    eta: float,
    beta: float,
    stop_within_eps: bool,
) -> tuple[Tensor, Tensor]:
    """One FAB run (Alg. 1, lines 4-14) from ``start``: (smallest adversarial, its norm; inf if none)."""
    n = x.shape[0]
    shape = x.shape
    best = x.clone()
    best_norm = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
    if n == 0:
        return best, best_norm
    act = torch.arange(n, device=x.device)
    xo, yo, to = x.flatten(1), y, target
    cur = start.flatten(1).clone()
    for _ in range(steps):
        _, w, b = _hyperplane(model, cur.view(-1, *shape[1:]), yo, to, norm)
        r_cur = -b
        r_orig = -(b + (w * (xo - cur)).sum(1))
        d_cur = project_hyperplane_box(cur, w, r_cur, norm)
        d_orig = project_hyperplane_box(xo, w, r_orig, norm)
        n_cur, n_orig = _lengths(d_cur, norm), _lengths(d_orig, norm)
        alpha = (n_cur / (n_cur + n_orig).clamp_min(_TINY)).clamp(0.0, alpha_max)[:, None]
        nxt = ((1 - alpha) * (cur + eta * d_cur) + alpha * (xo + eta * d_orig)).clamp(0.0, 1.0)
        with torch.no_grad():
            hit = fooled(model(nxt.view(-1, *shape[1:])), yo)
        dist = _lengths(nxt - xo, norm)
        better = hit & (dist < best_norm[act])
        if bool(better.any()):
            rows = act[better]
            best[rows] = nxt[better].view(-1, *shape[1:])
            best_norm[rows] = dist[better]
        cur = torch.where(hit[:, None], (1 - beta) * xo + beta * nxt, nxt)
        if stop_within_eps:
            keep = best_norm[act] > eps
            if not bool(keep.all()):
                act, xo, yo, cur = act[keep], xo[keep], yo[keep], cur[keep]
                to = None if to is None else to[keep]
                if act.numel() == 0:
                    break
    return best, best_norm


def _unit_directions(x: Tensor, norm: str, gen: torch.Generator | None) -> Tensor:
    """Random directions of unit ``norm`` length, one per row of ``x`` (drawn for every row)."""
    if norm == "linf":
        t = 2 * torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) - 1
    elif norm == "l2":
        t = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    else:
        e = -torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype).clamp_min(_TINY).log()
        t = e * (torch.randint(0, 2, x.shape, generator=gen, device=x.device).to(x.dtype) * 2 - 1)
    flat = t.flatten(1)
    return (flat / _lengths(flat, norm).clamp_min(_TINY)[:, None]).view_as(x)


def _check_params(steps: int, restarts: int, alpha_max: float, eta: float, beta: float) -> None:
    check_counts(steps, restarts, attack="FAB")
    if not 0.0 <= float(alpha_max) <= 1.0:
        raise UserError(f"alpha_max: expected a value in [0, 1], got {alpha_max!r}")
    if not float(eta) >= 1.0:
        raise UserError(f"eta: expected an overshoot >= 1, got {eta!r}")
    if not 0.0 < float(beta) < 1.0:
        raise UserError(f"beta: expected a value in (0, 1), got {beta!r}")


def _within_eps_and_misclassified(model: nn.Module, xs: Tensor, ys: Tensor, best: Tensor, best_norm: Tensor, eps: float) -> Tensor:
    """The contract: ``best`` where its norm is at most eps, else ``xs``; a returned point that
    differs from ``xs`` is misclassified on the returned batch (else ``xs`` again)."""
    out = torch.where((best_norm <= eps).view(-1, *([1] * (xs.dim() - 1))), best, xs)
    changed = (out != xs).flatten(1).any(1)
    if bool(changed.any()):
        with torch.no_grad():
            ok = fooled(model(out[changed]), ys[changed])
        bad = changed.nonzero().squeeze(1)[~ok]
        out[bad] = xs[bad]
    return out


@register
@dataclass(frozen=True, kw_only=True)
class FAB(Attack):
    """FAB: the smallest adversarial perturbation by projections onto linearised boundaries (Croce & Hein, ICML 2020)"""

    name: ClassVar[str] = "fab"

    steps: int = 100
    targeted: bool = False
    n_target_classes: int = 9  # FAB-T: the classes of highest clean logit, in turn
    restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    # stop iterating on an example once it has an adversarial within eps (the ensemble's
    # setting: the same robust flags, fewer iterations, but no longer the smallest found)
    stop_within_eps: bool = False
    # use min(n_target_classes, K - 1) targets instead of refusing more (as APGD-T does)
    clamp_targets: bool = True

    def __post_init__(self) -> None:
        _check_params(self.steps, self.restarts, self.alpha_max, self.eta, self.beta)

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, index: Tensor | None = None
    ) -> Tensor:
        """Each target, then each restart, on the examples with no adversarial within eps yet.
        Random starts (restarts >= 2) are drawn for every row of ``x``."""
        norm = _norm_of(threat)
        x = x.detach()
        gen = seeded(generator, x.device)
        xs, ys = rows(x, index), rows(y, index)
        with torch.no_grad():
            logits = model(xs) if xs.shape[0] else model(x[:1])
        targets = self._targets(logits, ys)
        best = xs.clone()
        if xs.shape[0] == 0:
            return best
        best_norm = torch.full((xs.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
        robust = logits.argmax(1) == ys  # misclassified when clean: x itself (distance 0)
        eps = float(threat.eps)
        for tgt in targets:
            for r in range(self.restarts):
                if r == 0:
                    starts = xs
                else:  # at distance min(u, eps) / 2 from x, u: the smallest adversarial norm so far
                    unit = rows(_unit_directions(x, norm, gen), index)
                    radius = torch.minimum(best_norm, torch.full_like(best_norm, eps)) / 2
                    starts = (xs + radius.view(-1, *([1] * (xs.dim() - 1))) * unit).clamp(0.0, 1.0)
                todo = (robust & ~(best_norm <= eps)).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                adv, dist = _fab_single(
                    model, xs[todo], ys[todo], starts[todo], norm, eps, self.steps,
                    None if tgt is None else tgt[todo], self.alpha_max, self.eta, self.beta, self.stop_within_eps,
                )
                better = dist < best_norm[todo]
                best[todo[better]] = adv[better]
                best_norm[todo[better]] = dist[better]
        return _within_eps_and_misclassified(model, xs, ys, best, best_norm, eps)

    def _targets(self, logits: Tensor, ys: Tensor) -> list[Tensor | None]:
        """[None] untargeted; FAB-T: the target class of every row, one tensor per target."""
        n_cls = int(logits.shape[1])
        if n_cls < 2:
            raise UserError(f"FAB needs a model with at least 2 classes, this one has {n_cls}")
        if not self.targeted:
            return [None]
        n_target_classes = self.n_target_classes
        if isinstance(n_target_classes, bool) or not isinstance(n_target_classes, int):
            raise UserError(f"n_target_classes: expected an integer in 1..{n_cls - 1}, got {n_target_classes!r}")
        n_t = min(n_target_classes, n_cls - 1) if self.clamp_targets else n_target_classes
        if not 1 <= n_t <= n_cls - 1:
            raise UserError(f"n_target_classes: expected an integer in 1..{n_cls - 1} (the model has {n_cls} classes), got {n_target_classes}")
        if not ys.shape[0]:
            return [None]
        ranked = logits.scatter(1, ys[:, None], float("-inf")).argsort(1, descending=True)[:, :n_t]
        return [ranked[:, j] for j in range(n_t)]


@register
@dataclass(frozen=True, kw_only=True)
class FABT(FAB):
    """FAB-T: FAB towards each of the top wrong classes in turn, as in AutoAttack's standard version (Croce & Hein 2020)"""

    name: ClassVar[str] = "fab-t"

    targeted: bool = True


def fab(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
    """FAB (``targeted=False``) or FAB-T (:class:`FAB`, Croce & Hein 2020, Alg. 1) for linf, l2 or l1.

    Returns, per example, the smallest misclassified point found if its ``threat`` norm is at
    most ``threat.eps``, else ``x`` itself (see the module docstring for the exact contract).
    For the minimal adversarial distance regardless of a budget, use ``Linf(1.0)`` or an L2 /
    L1 eps larger than the image diameter. ``n_target_classes`` (FAB-T): 1..K-1 classes of
    highest clean logit (more are refused here; ``clamp_targets=True`` caps them at K - 1);
    ``generator`` feeds the random starts of restarts 2, 3, ...
    """
    return FAB(**{"clamp_targets": False, **options})(model, x, y, threat, generator=generator)
