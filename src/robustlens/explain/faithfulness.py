"""Faithfulness of saliency maps: does removing what a map highlights change the decision?

    curve = deletion_curve(model, x, y, maps, baseline="mean")     # {fractions, scores, auc}
    r = road(model, x, y, maps, fractions=(0.1, 0.3, 0.5, 0.7, 0.9))  # {morf, lerf, gap}
    inf = infidelity(model, x, y, maps, generator=g)                 # (N,)

* **Deletion / pixel flipping** (Samek et al. 2017, Sec. III; Petsiuk et al. 2018, Sec. 3.2):
  the pixels are set to a ``baseline``, most relevant first, and the target's score (softmax
  probability by default) is recorded after each step; a faithful map makes it fall fast
  (small area under the curve). **Insertion** (Petsiuk et al.): from the baseline image,
  the pixels of ``x`` are put back most relevant first; a faithful map makes it rise fast
  (large area).
* **ROAD** (Rong et al. 2022, "remove and debias"): a fraction of the pixels is removed and
  filled by *noisy linear imputation* (each removed pixel the weighted mean of its 8
  neighbours, 1/6 direct and 1/12 diagonal, solved as one sparse linear system, plus
  N(0, ``noise``^2)), so the shape of the removed set does not leak the label through a
  constant fill; most relevant first (MoRF: accuracy should fall) and least relevant first
  (LeRF: accuracy should stay). ``gap`` = mean LeRF accuracy - mean MoRF accuracy.
* **Infidelity** (Yeh et al. 2019, Def. 2.1): E_I[(I^T phi(x) - (f_t(x) - f_t(x - I)))^2] with
  I ~ N(0, ``noise_std``^2 I); ``normalize`` rescales phi by the optimal beta (captum's
  option); ``relative`` divides by E_I[(f_t(x) - f_t(x - I))^2], so models with different
  logit scales compare (0 = perfectly faithful linear prediction, 1 = none).

Pixels are ranked by :func:`pixel_relevance` of the map (``abs``: sum_c |phi|, ``signed``:
sum_c phi, ``elementwise``: every (channel, pixel) value on its own, as Quantus does), ties
broken by position. All perturbed images, across fractions and images, go through the model
in chunks of ``internal_batch_size`` rows, so memory is bounded by that batch whatever the
number of steps. Images are float [0, 1], NCHW; the model normalises its own input.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from robustlens.errors import UserError
from robustlens.explain.saliency import Target, _chunks, _NoiseSamples, _positive, check_images, check_target

RANKINGS = ("abs", "signed", "elementwise")
SCORES = ("probability", "logit")
ROAD_ORDERS = ("morf", "lerf")
# noisy linear imputation (Rong et al. 2022): neighbour offsets and weights
_NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
               ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


# ----------------------------------------------------------------------------- checks


def check_fractions(fractions: Any, name: str = "fractions") -> list[float]:
    """A non-empty list of distinct fractions, each strictly inside (0, 1), sorted."""
    try:
        vals = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise UserError(f"{name}: expected a list of numbers in (0, 1), got {fractions!r}") from None
    bad = [f for f in vals if not 0.0 < f < 1.0 or math.isnan(f)]
    if not vals or bad:
        raise UserError(f"{name}: every fraction must lie strictly between 0 and 1, got {bad or 'an empty list'}")
    if len(set(vals)) != len(vals):
        raise UserError(f"{name}: fractions repeat: {vals}")
    return sorted(vals)


def _check_maps(maps: Any, x: Tensor, ranking: str) -> Tensor:
    if ranking not in RANKINGS:
        raise UserError(f"ranking: expected one of {', '.join(RANKINGS)}, got {ranking!r}")
    if not isinstance(maps, Tensor) or maps.dim() != 4 or maps.shape[0] != x.shape[0] or maps.shape[2:] != x.shape[2:] \
            or maps.shape[1] not in (1, x.shape[1]):
        got = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise UserError(f"maps: expected a tensor (N, 1 or C, H, W) matching the images {tuple(x.shape)}, got {got}")
    return maps.detach().to(device=x.device, dtype=x.dtype)


def resolve_baseline(images: Tensor, baseline: Any, metric: str) -> Tensor:
    """The fill image of ``metric``: a number, ``"mean"`` (each image's per-channel mean) or a
    tensor that broadcasts to the images. ``None`` is refused: the metric needs a baseline."""
    x = images
    if baseline is None:
        raise UserError(f"{metric}: needs a baseline (the value removed pixels take): pass a number, 'mean' or a tensor")
    if isinstance(baseline, str):
        if baseline != "mean":
            raise UserError(f"{metric}: baseline {baseline!r} unknown; expected a number, 'mean' or a tensor")
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if not isinstance(baseline, Tensor):
        raise UserError(f"{metric}: baseline must be a number, 'mean' or a tensor, got {type(baseline).__name__}")
    try:
        return torch.broadcast_to(baseline.to(device=x.device, dtype=x.dtype), x.shape)
    except RuntimeError:
        raise UserError(f"{metric}: baseline shape {tuple(baseline.shape)} does not broadcast to the images' {tuple(x.shape)}") from None


def pixel_relevance(maps: Tensor, ranking: str = "abs") -> Tensor:
    """The relevance that orders the features: (N, 1, H, W) for ``abs`` / ``signed``, the map itself for ``elementwise``."""
    if ranking == "abs":
        return maps.abs().sum(1, keepdim=True)
    if ranking == "signed":
        return maps.sum(1, keepdim=True)
    return maps


def feature_ranks(relevance: Tensor) -> Tensor:
    """rank[i, f] = position of feature f in image i's descending order (0 = most relevant; ties by index)."""
    flat = relevance.flatten(1)
    order = torch.argsort(-flat, dim=1, stable=True)
    ranks = torch.empty_like(order)
    return ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order).contiguous())


def _count(fraction: float, n_features: int) -> int:
    return int(fraction * n_features + 1e-9)


def _score(model: nn.Module, x: Tensor, t: Tensor, score: str) -> Tensor:
    with torch.no_grad():
        out = model(x)
        if score == "probability":
            out = out.softmax(1)
        return out.gather(1, t[:, None])[:, 0]


# ----------------------------------------------------------------------------- deletion / insertion


def _masked_scores(
    model: nn.Module, t: Tensor, ranks: Tensor, counts: Sequence[int], inside: Tensor, outside: Tensor, shape: tuple, score: str, b: int
) -> Tensor:
    """scores[i, k] for the images that take ``inside`` on the ``counts[k]`` top-ranked features and
    ``outside`` elsewhere; the K x N images are built and scored in chunks of ``b`` rows."""
    n = inside.shape[0]
    cnt = torch.tensor(list(counts), device=ranks.device)
    out = torch.empty(len(counts) * n, dtype=inside.dtype, device=inside.device)
    for ch in _chunks(len(counts) * n, b):
        rows = torch.arange(ch.start, ch.stop, device=ranks.device)
        k, i = rows // n, rows % n
        mask = (ranks[i] < cnt[k, None]).view(-1, *shape)
        out[ch] = _score(model, torch.where(mask, inside[i], outside[i]), t[i], score)
    return out.view(len(counts), n).T


def _curve(model, images, target, maps, baseline, steps, ranking, score, internal_batch_size, insertion: bool) -> dict:
    x = check_images(images)
    t = check_target(model, x, target)
    m = _check_maps(maps, x, ranking)
    steps, b = _positive(steps, "steps"), _positive(internal_batch_size, "internal_batch_size")
    if score not in SCORES:
        raise UserError(f"score: expected one of {', '.join(SCORES)}, got {score!r}")
    base = resolve_baseline(x, baseline, "insertion" if insertion else "deletion")
    rel = pixel_relevance(m, ranking)
    ranks = feature_ranks(rel)
    n_feat = ranks.shape[1]
    fractions = [k / steps for k in range(steps + 1)]
    counts = [_count(f, n_feat) for f in fractions]
    inside, outside = (x, base) if insertion else (base, x)
    scores = _masked_scores(model, t, ranks, counts, inside, outside, tuple(rel.shape[1:]), score, b)
    auc = torch.trapezoid(scores, dx=1.0 / steps, dim=1)
    return {"fractions": fractions, "scores": scores, "auc": auc}


def deletion_curve(
    model: nn.Module, images: Tensor, target: Target, maps: Tensor, baseline: Any = None, steps: int = 20,
    ranking: str = "abs", score: str = "probability", internal_batch_size: int = 64,
) -> dict:
    """Deletion / pixel flipping (Samek et al. 2017; Petsiuk et al. 2018): the target's score
    after the most relevant ``k / steps`` of the features are set to ``baseline``, k = 0..steps.

    Returns ``{"fractions": [0, 1/steps, ..., 1], "scores": (N, steps + 1), "auc": (N,)}``, the
    area by the trapezoidal rule over the fraction removed (lower = more faithful).
    """
    return _curve(model, images, target, maps, baseline, steps, ranking, score, internal_batch_size, insertion=False)


def insertion_curve(
    model: nn.Module, images: Tensor, target: Target, maps: Tensor, baseline: Any = None, steps: int = 20,
    ranking: str = "abs", score: str = "probability", internal_batch_size: int = 64,
) -> dict:
    """Insertion (Petsiuk et al. 2018, Sec. 3.2): from the ``baseline`` image, the most relevant
    ``k / steps`` of the features of ``x`` put back; same keys as :func:`deletion_curve`
    (higher area = more faithful)."""
    return _curve(model, images, target, maps, baseline, steps, ranking, score, internal_batch_size, insertion=True)


# ----------------------------------------------------------------------------- ROAD


def noisy_linear_imputation(images: Tensor, removed: Tensor, noise: float = 0.01, generator: torch.Generator | None = None) -> Tensor:
    """Rong et al. 2022 (ROAD, Sec. 4): every removed pixel (``removed`` (N, H, W) bool) takes
    the weighted mean of its in-image neighbours (1/6 direct, 1/12 diagonal), known or removed:
    one sparse linear system for the whole batch (scipy's SuperLU), each channel a right-hand
    side; then N(0, ``noise``^2) is added to the imputed values (as Quantus's
    ``noisy_linear_imputation``, adapted from the authors' code)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    x = images.detach().cpu().double().numpy()
    rem = removed.detach().cpu().numpy().astype(bool)
    n, c, h, w = x.shape
    var = -np.ones(rem.shape, dtype=np.int64)
    nz = np.nonzero(rem)
    m = len(nz[0])
    if m == 0:
        return images.clone()
    var[nz] = np.arange(m)
    rows, cols, vals = [np.arange(m)], [np.arange(m)], []
    diag = np.ones(m)
    rhs = np.zeros((m, c))
    for (dy, dx), wt in _NEIGHBOURS:
        yy, xx = nz[1] + dy, nz[2] + dx
        valid = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        diag[~valid] -= wt
        u, ii, yv, xv = np.nonzero(valid)[0], nz[0][valid], yy[valid], xx[valid]
        q = var[ii, yv, xv]
        known = q < 0
        rhs[u[known]] -= wt * x[ii[known], :, yv[known], xv[known]]
        rows.append(u[~known])
        cols.append(q[~known])
        vals.append(np.full(int((~known).sum()), wt))
    a = coo_matrix((np.concatenate([-diag, *vals]), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m)).tocsc()
    sol = np.asarray(spsolve(a, rhs)).reshape(m, c)
    out = images.detach().clone()
    fill = torch.from_numpy(sol).to(out)
    if noise:
        fill = fill + noise * torch.randn(fill.shape, generator=generator, dtype=fill.dtype).to(out.device)
    idx = tuple(torch.from_numpy(v).to(out.device) for v in nz)
    out[idx[0], :, idx[1], idx[2]] = fill
    return out


def road(
    model: nn.Module, images: Tensor, target: Target, maps: Tensor, fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    orders: Sequence[str] = ROAD_ORDERS, noise: float = 0.01, ranking: str = "abs", generator: torch.Generator | None = None,
    internal_batch_size: int = 64,
) -> dict:
    """ROAD (Rong et al. 2022): accuracy after removing each fraction of the pixels, most
    relevant first (``morf``) and least relevant first (``lerf``), the removed pixels filled by
    :func:`noisy_linear_imputation`. The (fraction, image) pairs are imputed and scored in
    chunks of ``internal_batch_size``.

    Returns ``{"fractions", order: {"accuracy" (K,), "probability" (K,), "correct" (N, K)}, "gap"}``;
    accuracy = prediction == ``target``; gap = mean LeRF accuracy - mean MoRF accuracy
    (present with both orders; higher = more faithful).
    """
    x = check_images(images)
    t = check_target(model, x, target)
    fr = check_fractions(fractions)
    b = _positive(internal_batch_size, "internal_batch_size")
    if ranking == "elementwise":
        raise UserError("ranking: ROAD removes whole pixels; use 'abs' or 'signed'")
    rel = pixel_relevance(_check_maps(maps, x, ranking), ranking)
    bad = [o for o in orders if o not in ROAD_ORDERS]
    if bad or not orders:
        raise UserError(f"orders: expected some of {', '.join(ROAD_ORDERS)}, got {list(orders)!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise UserError(f"noise: expected a number >= 0, got {noise!r}")
    n, hw = x.shape[0], x.shape[2] * x.shape[3]
    out: dict[str, Any] = {"fractions": fr}
    for order in orders:
        ranks = feature_ranks(rel if order == "morf" else -rel)
        counts = torch.tensor([_count(f, hw) for f in fr], device=x.device)
        correct = torch.empty(len(fr) * n, dtype=torch.bool, device=x.device)
        prob = torch.empty(len(fr) * n, dtype=x.dtype, device=x.device)
        for ch in _chunks(len(fr) * n, b):
            rows = torch.arange(ch.start, ch.stop, device=x.device)
            k, i = rows // n, rows % n
            removed = (ranks[i] < counts[k, None]).view(-1, *x.shape[2:])
            xi = noisy_linear_imputation(x[i], removed, noise, generator)
            with torch.no_grad():
                logits = model(xi)
            correct[ch] = logits.argmax(1) == t[i]
            prob[ch] = logits.softmax(1).gather(1, t[i, None])[:, 0]
        c, p = correct.view(len(fr), n).T, prob.view(len(fr), n).T
        out[order] = {"accuracy": c.double().mean(0).tolist(), "probability": p.mean(0).tolist(), "correct": c}
    if "morf" in out and "lerf" in out:
        out["gap"] = float(np.mean(out["lerf"]["accuracy"]) - np.mean(out["morf"]["accuracy"]))
    return out


# ----------------------------------------------------------------------------- infidelity


def infidelity(
    model: nn.Module, images: Tensor, target: Target, maps: Tensor, n_samples: int = 10, noise_std: float = 0.1,
    perturbations: Tensor | None = None, generator: torch.Generator | None = None, normalize: bool = False,
    relative: bool = False, internal_batch_size: int = 64,
) -> Tensor:
    """Infidelity (Yeh et al. 2019, Def. 2.1; captum.metrics.infidelity), per image:
    1/n sum_s (I_s^T phi - (f_t(x) - f_t(x - I_s)))^2, f_t the target logit, I_s ~ N(0,
    ``noise_std``^2 I) (or ``perturbations`` (n, N, C, H, W)). ``normalize``: phi scaled by
    beta = E[I^T phi Delta f] / E[(I^T phi)^2] first (captum's ``normalize``); ``relative``:
    divided by E[Delta f^2] as well (scale-free, in [0, 1] with ``normalize``).
    The n x N perturbed images are scored in chunks of ``internal_batch_size``."""
    x = check_images(images)
    t = check_target(model, x, target)
    phi = _check_maps(maps, x, "elementwise").expand_as(x)
    n_samples, b = _positive(n_samples, "n_samples"), _positive(internal_batch_size, "internal_batch_size")
    draws = _NoiseSamples(x, n_samples, perturbations, generator, name="perturbations")
    scale = 1.0 if perturbations is not None else float(noise_std)
    n = x.shape[0]
    with torch.no_grad():
        f0 = model(x).gather(1, t[:, None])[:, 0]
    aa, ab, bb, sq = (torch.zeros(n, dtype=x.dtype, device=x.device) for _ in range(4))
    for ch in _chunks(n_samples * n, b):
        i, e = draws.rows(ch)
        pert = scale * e
        with torch.no_grad():
            df = f0[i] - model(x[i] - pert).gather(1, t[i, None])[:, 0]
        dot = (pert * phi[i]).flatten(1).sum(1)
        aa.index_add_(0, i, dot * dot)
        ab.index_add_(0, i, dot * df)
        bb.index_add_(0, i, df * df)
        sq.index_add_(0, i, (dot - df) ** 2)
    if normalize:
        beta = torch.where(aa != 0, ab / torch.where(aa != 0, aa, torch.ones_like(aa)), torch.zeros_like(aa))
        value = beta * beta * aa - 2 * beta * ab + bb
    else:
        value = sq
    value = value / n_samples
    if relative:
        value = value / torch.where(bb > 0, bb / n_samples, torch.ones_like(bb))
    return value


__all__ = ["RANKINGS", "ROAD_ORDERS", "SCORES", "check_fractions", "deletion_curve", "feature_ranks", "infidelity",
           "insertion_curve", "noisy_linear_imputation", "pixel_relevance", "resolve_baseline", "road"]
