"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020): a score-based black-box
attack by random search, no gradients, to catch gradient masking.

At every query one square window of side ``s`` is resampled and the candidate is kept if it
lowers the margin ``z_y - max_{j!=y} z_j`` (the attack stops on an example once the margin is
negative). Window size ``s = round(sqrt(p * n_features / C))`` follows the schedule of
``p`` (:func:`p_selection`): ``p_init`` halved at queries 10, 50, 200, 500, 1000, 2000, 4000,
6000, 8000 of a 10,000-query budget, rescaled to ``n_queries``.

* Linf (Alg. 1 + Sec. 3.1): start from vertical stripes of +-eps; each update sets the
  window, per channel, to +-eps (a random vertex of the ball).
* L2 (Sec. 3.2): start from a grid of "pseudo-Gaussian" bumps rescaled to norm eps; each
  update moves mass from a second window into the first one, with a new bump of random sign
  per channel added to the old content, keeping ``||delta||_2 = eps``.

Defaults (:class:`Square`, AutoAttack's standard version): ``n_queries=5000``, ``p_init=0.8``,
margin loss, one restart. Windows are shared by the batch at each query (as in the authors' code);
signs are drawn for every example of the call, so an example's trajectory does not depend on
which other examples are still being attacked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from robustlens.attacks._common import seeded
from robustlens.attacks.base import Attack, register
from robustlens.attacks.losses import margin
from robustlens.errors import UserError
from robustlens.threat import L2, Linf, ThreatModel

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def p_selection(p_init: float, it: int, n_queries: int) -> float:
    """Fraction of pixels changed at query ``it`` (the authors' schedule, rescaled to 10,000)."""
    it = int(it / n_queries * 10000)
    for bound, div in _SCHEDULE:
        if it <= bound:
            return p_init / div
    return p_init / 512


def _randint(lo: int, hi: int, gen: torch.Generator | None) -> int:
    """Uniform integer in [lo, hi) (hi > lo), or lo when the range is empty."""
    if hi <= lo:
        return lo
    return int(torch.randint(lo, hi, (1,), generator=gen))


def _signs(shape: tuple[int, ...], gen: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=device).to(dtype) * 2 - 1


def _bump_rect(a: int, b: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``pseudo_gaussian_pert_rectangles``: nested rectangles weighted 1/(k+1)^2, unit L2 norm."""
    delta = torch.zeros(a, b, device=device, dtype=dtype)
    xc, yc = a // 2 + 1, b // 2 + 1
    c0, c1 = xc - 1, yc - 1
    for k in range(max(xc, yc)):
        delta[max(c0, 0) : min(c0 + 2 * k + 1, a), max(0, c1) : min(c1 + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
        c0 -= 1
        c1 -= 1
    return delta / delta.pow(2).sum().sqrt().clamp_min(1e-12)


def _meta_bump(s: int, transpose: bool, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``meta_pseudo_gaussian_pert``: a positive bump above a negative one, maybe transposed."""
    delta = torch.zeros(s, s, device=device, dtype=dtype)
    delta[: s // 2] = _bump_rect(s // 2, s, device, dtype) if s // 2 else 0.0
    delta[s // 2 :] = -_bump_rect(s - s // 2, s, device, dtype)
    delta = delta / delta.pow(2).sum().sqrt().clamp_min(1e-12)
    return delta.t() if transpose else delta


def _l2(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


@dataclass(frozen=True)
class _Window:
    """The random draws of one query: the window (side ``s`` at ``vh, vw``), the signs of every
    example of the call, and for L2 the second window and the bump's orientation."""

    s: int
    vh: int
    vw: int
    signs: Tensor
    vh2: int = 0
    vw2: int = 0
    transpose: bool = False


class _Search:
    """The state one Square run shares between its queries: the whole batch ``x`` (draws are
    made for every row), the attacked rows ``sel``, the radius and the generator."""

    def __init__(self, x: Tensor, sel: Tensor, eps: float, gen: torch.Generator | None) -> None:
        self.x, self.sel, self.eps, self.gen = x, sel, eps, gen
        self.n_all, self.c, self.h, self.w = x.shape
        self.dev, self.dt = x.device, x.dtype

    def signs(self, shape: tuple[int, ...]) -> Tensor:
        """Random signs for every example of the call, then the attacked rows."""
        return _signs((self.n_all, *shape), self.gen, self.dev, self.dt)[self.sel]

    def side(self, p: float, minimum: int) -> int:
        """The window side ``round(sqrt(p * n_features / C))``, at least ``minimum``."""
        n_features = self.c * self.h * self.w
        return max(int(round(math.sqrt(p * n_features / self.c))), minimum)


class _LinfSearch(_Search):
    """Alg. 1 + Sec. 3.1: vertical stripes of +-eps; a window set per channel to +-eps."""

    def init(self, xs: Tensor) -> Tensor:
        return (xs + self.eps * self.signs((self.c, 1, self.w))).clamp(0.0, 1.0)

    def draw(self, p: float) -> _Window:
        s = min(self.side(p, 1), self.h - 1 if self.h > 1 else 1)
        vh, vw = _randint(0, self.h - s, self.gen), _randint(0, self.w - s, self.gen)
        return _Window(s, vh, vw, self.signs((self.c, 1, 1)))

    def candidate(self, x_cur: Tensor, x_b: Tensor, win: _Window, act: Tensor, threat: ThreatModel) -> Tensor:
        eps, s, vh, vw = self.eps, win.s, win.vh, win.vw
        delta = x_b - x_cur
        delta[:, :, vh : vh + s, vw : vw + s] = 2 * eps * win.signs[act]
        return torch.min(torch.max(x_cur + delta, x_cur - eps), x_cur + eps).clamp(0.0, 1.0)


class _L2Search(_Search):
    """Sec. 3.2: a grid of pseudo-Gaussian bumps of norm eps; each query moves the mass of a
    second window into the first, with a new bump of random sign per channel."""

    def init(self, xs: Tensor) -> Tensor:
        h, w, gen = self.h, self.w, self.gen
        s = max(h // 5, 1)
        sp = (h - s * 5) // 2 if h >= 5 else 0
        delta = torch.zeros_like(xs)
        vh = sp
        for _ in range(h // s):
            if vh + s > h:  # a grid of (mostly 5x5) bumps that stays inside the image
                break
            vw = sp
            for _ in range(w // s):
                if vw + s > w:
                    break
                transpose = bool(torch.rand(1, generator=gen) > 0.5)
                bump = _meta_bump(s, transpose, self.dev, self.dt).view(1, 1, s, s)
                delta[:, :, vh : vh + s, vw : vw + s] += bump * self.signs((self.c, 1, 1))
                vw += s
            vh += s
        return (xs + delta / _l2(delta).clamp_min(1e-12) * self.eps).clamp(0.0, 1.0)

    def draw(self, p: float) -> _Window:
        s = self.side(p, 3)
        if s % 2 == 0:
            s += 1
        s = min(s, self.h - 1 if self.h > 1 else 1)
        vh, vw = _randint(0, self.h - s, self.gen), _randint(0, self.w - s, self.gen)
        vh2, vw2 = _randint(0, self.h - s, self.gen), _randint(0, self.w - s, self.gen)
        transpose = bool(torch.rand(1, generator=self.gen) > 0.5)
        return _Window(s, vh, vw, self.signs((self.c, 1, 1)), vh2, vw2, transpose)

    def candidate(self, x_cur: Tensor, x_b: Tensor, win: _Window, act: Tensor, threat: ThreatModel) -> Tensor:
        eps, s, vh, vw, vh2, vw2 = self.eps, win.s, win.vh, win.vw, win.vh2, win.vw2
        delta = x_b - x_cur
        old = delta[:, :, vh : vh + s, vw : vw + s]
        norm_win1 = old.pow(2).sum((2, 3), keepdim=True).sqrt()
        mask = torch.zeros_like(delta[:1, :1])
        mask[..., vh : vh + s, vw : vw + s] = 1
        mask[..., vh2 : vh2 + s, vw2 : vw2 + s] = 1
        norms_windows = (delta * mask).pow(2).sum((2, 3), keepdim=True).sqrt()
        norm_img = _l2(delta)
        new = _meta_bump(s, win.transpose, self.dev, self.dt).view(1, 1, s, s) * win.signs[act]
        new = new + old / (1e-10 + norm_win1)
        budget = ((eps**2 - norm_img**2).clamp_min(0) / self.c + norms_windows**2).sqrt()
        new = new / new.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * budget
        delta[:, :, vh2 : vh2 + s, vw2 : vw2 + s] = 0.0
        delta[:, :, vh : vh + s, vw : vw + s] = new
        x_new = (x_cur + delta / _l2(delta).clamp_min(1e-12) * eps).clamp(0.0, 1.0)
        return threat.project(x_new, x_cur)


@register
@dataclass(frozen=True, kw_only=True)
class Square(Attack):
    """Square Attack: score-based random search, no gradients (Andriushchenko et al. 2020)"""

    name: ClassVar[str] = "square"

    n_queries: int = 5000
    p_init: float = 0.8

    def __post_init__(self) -> None:
        if not isinstance(self.n_queries, int) or self.n_queries < 1:
            raise UserError(f"--steps/n_queries: expected an integer >= 1, got {self.n_queries!r}")
        if not 0 < self.p_init <= 1:
            raise UserError(f"p_init: expected a value in (0, 1], got {self.p_init}")

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, index: Tensor | None = None
    ) -> Tensor:
        """Square Attack (Linf or L2) on rows ``index`` of (x, y): one window per query, kept
        where it lowers the margin, until the query budget is spent or every row is fooled."""
        if not isinstance(threat, (Linf, L2)):
            raise UserError(f"square: supports the linf and l2 threat models, not {threat.norm}")
        if x.dim() != 4:
            raise UserError(f"square: expects images (N, C, H, W), got shape {tuple(x.shape)}")
        x = x.detach()
        gen = seeded(generator, x.device)
        sel = torch.arange(x.shape[0], device=x.device) if index is None else index
        search = (_LinfSearch if isinstance(threat, Linf) else _L2Search)(x, sel, threat.eps, gen)
        xs, ys = x[sel], y[sel]

        def margins(z: Tensor, yy: Tensor) -> Tensor:
            with torch.no_grad():
                return -margin(model(z), yy)  # z_y - max_{j!=y} z_j

        x_best = search.init(xs)
        m_best = margins(x_best, ys)
        for it in range(self.n_queries):
            act = (m_best > 0).nonzero().squeeze(1)
            # the same draws whatever the active set, so that trajectories are per example
            win = search.draw(p_selection(self.p_init, it, self.n_queries))
            if act.numel() == 0:
                break
            x_new = search.candidate(xs[act], x_best[act], win, act, threat)
            m_new = margins(x_new, ys[act])
            better = m_new < m_best[act]
            upd = act[better]
            x_best[upd] = x_new[better]
            m_best[upd] = m_new[better]
        return x_best


def square(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator | None = None, **options: Any) -> Tensor:
    """Square Attack (:class:`Square`, Linf or L2); returns adversarial images inside the ball and [0, 1]."""
    return Square(**options)(model, x, y, threat, generator=generator)
