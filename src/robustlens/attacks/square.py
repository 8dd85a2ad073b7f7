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

Defaults (AutoAttack's standard version): ``n_queries=5000``, ``p_init=0.8``, margin loss,
one restart. Windows are shared by the batch at each query (as in the authors' code);
signs are drawn for every example of the call, so an example's trajectory does not depend on
which other examples are still being attacked.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustlens.attacks._common import check_inputs, seeded
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


def _bump(s: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``pseudo_gaussian_pert_rectangles``: nested squares weighted 1/(k+1)^2, unit L2 norm."""
    return _bump_rect(s, s, device, dtype)


def _bump_rect(a: int, b: int, device: torch.device, dtype: torch.dtype) -> Tensor:
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


def square(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    n_queries: int = 5000,
    p_init: float = 0.8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Square Attack (Linf or L2); returns adversarial images inside the ball and [0, 1]."""
    check_inputs(model, x, y, threat)
    return square_run(model, x, y, threat, n_queries, p_init, generator)


def square_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    n_queries: int = 5000,
    p_init: float = 0.8,
    generator: torch.Generator | None = None,
    index: Tensor | None = None,
) -> Tensor:
    """Square Attack on rows ``index`` of (x, y) (inputs validated)."""
    if not isinstance(threat, (Linf, L2)):
        raise UserError(f"square: supports the linf and l2 threat models, not {threat.norm}")
    if not isinstance(n_queries, int) or n_queries < 1:
        raise UserError(f"--steps/n_queries: expected an integer >= 1, got {n_queries!r}")
    if not 0 < p_init <= 1:
        raise UserError(f"p_init: expected a value in (0, 1], got {p_init}")
    if x.dim() != 4:
        raise UserError(f"square: expects images (N, C, H, W), got shape {tuple(x.shape)}")
    x = x.detach()
    gen = seeded(generator, x.device)
    n_all, c, h, w = x.shape
    dev, dt = x.device, x.dtype
    sel = torch.arange(n_all, device=dev) if index is None else index
    xs, ys = x[sel], y[sel]
    eps = threat.eps
    n_features = c * h * w

    def margins(z: Tensor, yy: Tensor) -> Tensor:
        with torch.no_grad():
            return -margin(model(z), yy)  # z_y - max_{j!=y} z_j

    # initialisation
    if isinstance(threat, Linf):
        stripes = _signs((n_all, c, 1, w), gen, dev, dt)[sel]
        x_best = (xs + eps * stripes).clamp(0.0, 1.0)
    else:
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
                bump = _meta_bump(s, transpose, dev, dt).view(1, 1, s, s)
                sign = _signs((n_all, c, 1, 1), gen, dev, dt)[sel]
                delta[:, :, vh : vh + s, vw : vw + s] += bump * sign
                vw += s
            vh += s
        x_best = (xs + delta / _l2(delta).clamp_min(1e-12) * eps).clamp(0.0, 1.0)
    m_best = margins(x_best, ys)

    for it in range(n_queries):
        act = (m_best > 0).nonzero().squeeze(1)
        p = p_selection(p_init, it, n_queries)
        # the same draws whatever the active set, so that trajectories are per example
        if isinstance(threat, Linf):
            s = min(max(int(round(math.sqrt(p * n_features / c))), 1), h - 1 if h > 1 else 1)
            vh, vw = _randint(0, h - s, gen), _randint(0, w - s, gen)
            signs = _signs((n_all, c, 1, 1), gen, dev, dt)[sel]
        else:
            s = max(int(round(math.sqrt(p * n_features / c))), 3)
            if s % 2 == 0:
                s += 1
            s = min(s, h - 1 if h > 1 else 1)
            vh, vw = _randint(0, h - s, gen), _randint(0, w - s, gen)
            vh2, vw2 = _randint(0, h - s, gen), _randint(0, w - s, gen)
            transpose = bool(torch.rand(1, generator=gen) > 0.5)
            signs = _signs((n_all, c, 1, 1), gen, dev, dt)[sel]
        if act.numel() == 0:
            break
        x_cur, x_b = xs[act], x_best[act]
        delta = x_b - x_cur
        if isinstance(threat, Linf):
            delta[:, :, vh : vh + s, vw : vw + s] = 2 * eps * signs[act]
            x_new = torch.min(torch.max(x_cur + delta, x_cur - eps), x_cur + eps).clamp(0.0, 1.0)
        else:
            win = delta[:, :, vh : vh + s, vw : vw + s]
            norm_win1 = win.pow(2).sum((2, 3), keepdim=True).sqrt()
            mask = torch.zeros_like(delta[:1, :1])
            mask[..., vh : vh + s, vw : vw + s] = 1
            mask[..., vh2 : vh2 + s, vw2 : vw2 + s] = 1
            norms_windows = (delta * mask).pow(2).sum((2, 3), keepdim=True).sqrt()
            norm_img = _l2(delta)
            new = _meta_bump(s, transpose, dev, dt).view(1, 1, s, s) * signs[act]
            new = new + win / (1e-10 + norm_win1)
            budget = ((eps**2 - norm_img**2).clamp_min(0) / c + norms_windows**2).sqrt()
            new = new / new.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * budget
            delta[:, :, vh2 : vh2 + s, vw2 : vw2 + s] = 0.0
            delta[:, :, vh : vh + s, vw : vw + s] = new
            x_new = (x_cur + delta / _l2(delta).clamp_min(1e-12) * eps).clamp(0.0, 1.0)
            x_new = threat.project(x_new, x_cur)
        m_new = margins(x_new, ys[act])
        better = m_new < m_best[act]
        upd = act[better]
        x_best[upd] = x_new[better]
        m_best[upd] = m_new[better]
    return x_best
