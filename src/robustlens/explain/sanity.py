"""Sanity checks for saliency maps (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

Model parameter randomisation test: re-initialise the model's parametrised layers and
measure how similar the maps stay to those of the original model.

* **Cascading** (``order="top_down"``): from the output layer back to the input,
  cumulatively: step k has the last k layers randomised (Adebayo et al. Sec. 3.1).
* **Independent**: one layer at a time, all others kept as trained.

Layers are the modules holding parameters of their own (conv, linear, batch-norm...),
in ``model.named_modules()`` (definition) order, which is the forward order of
sequential models; ``top_down`` reverses it. Re-initialisation calls the layer's own
``reset_parameters()`` (PyTorch's default initialisation; batch-norm layers go back to
weight 1, bias 0, running mean 0 / var 1), with the global RNG seeded per layer inside a
:func:`torch.random.fork_rng` block: deterministic from ``seed``, leaving the caller's RNG
untouched. Quantus' MPRT re-initialises the same way (``reset_parameters`` on modules that
have it) but seeds every layer with ``seed + 1``; pass ``randomize=`` to inject another rule.

Similarity of each map to the original model's map, per image (Adebayo et al. Sec. 3):

* ``spearman_abs``: Spearman rank correlation of the (H, W) maps sum_c |a|;
* ``spearman``: Spearman rank correlation of the signed maps sum_c a;
* ``ssim``: SSIM (``skimage.metrics.structural_similarity``, data_range 1) of the
  absolute maps each divided by its maximum (-> [0, 1]);
* ``hog``: Pearson correlation of the HOG descriptors (``skimage.feature.hog``, 9
  orientations, cells of max(2, min(H, W) // 8) pixels, 2 x 2 blocks) of those maps.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from robustlens.errors import UserError
from robustlens.progress import track
from robustlens.explain.saliency import Target, check_images, check_target, saliency
from robustlens.plot import save_figure

SIMILARITIES: tuple[str, ...] = ("spearman_abs", "spearman", "ssim", "hog")
ORDERS: tuple[str, ...] = ("top_down", "independent", "bottom_up")


def parametrised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules with parameters of their own, in definition (input -> output) order."""
    return [(n, m) for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]


def reset_layer(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module`` with its ``reset_parameters()`` under a fixed seed.

    Modules without ``reset_parameters`` get N(0, 0.01^2) weights and zero biases.
    The caller's global RNG state is restored afterwards.
    """
    devices = [p.device for p in module.parameters() if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(int(seed))
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            for name, p in module.named_parameters(recurse=False):
                if name.endswith("bias"):
                    p.zero_()
                else:
                    p.normal_(0.0, 0.01)


def randomized_models(
    model: nn.Module,
    order: str = "top_down",
    seed: int = 0,
    randomize: Callable[[nn.Module, int], None] | None = None,
    layers: Sequence[str] | None = None,
):
    """Yield ``(layer_name, model_copy)`` for each randomisation step (the copy is reused).

    ``top_down``: cascading from the output; ``bottom_up``: cascading from the input;
    ``independent``: one layer at a time. Layer k (in definition order) is re-initialised
    by ``randomize(module, k)`` (default: :func:`reset_layer` with seed ``seed * 1000 + k``).
    The original model is never modified.
    """
    if order not in ORDERS:
        raise UserError(f"order: expected one of {', '.join(ORDERS)}, got {order!r}")
    named = parametrised_layers(model)
    if layers is not None:
        known = [n for n, _ in named]
        missing = [n for n in layers if n not in known]
        if missing:
            raise UserError(f"layers: {missing} are not parametrised layers; valid: {', '.join(known)}")
        named = [(n, m) for n, m in named if n in set(layers)]
    if not named:
        raise UserError(f"{type(model).__name__} has no parametrised layers to randomise")
    index = {n: k for k, (n, _) in enumerate(parametrised_layers(model))}
    rule = randomize or (lambda m, k: reset_layer(m, seed * 1000 + k))
    seq = named[::-1] if order in ("top_down", "independent") else named
    original = copy.deepcopy(model.state_dict())
    work = copy.deepcopy(model)
    mods = dict(work.named_modules())
    for name, _ in seq:
        if order == "independent":
            work.load_state_dict(original)
        rule(mods[name], index[name])
        yield name, work


# ----------------------------------------------------------------------------- similarity


def _maps2d(maps: Tensor, absolute: bool) -> np.ndarray:
    a = maps.detach().double().cpu()
    a = a.abs().sum(1) if absolute else a.sum(1)
    return a.numpy()


def _rank(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of the rows of (N, D) arrays (average ranks for ties).

    A constant row gives 0 (no rank information) instead of NaN.
    """
    ra, rb = _rank(a), _rank(b)
    ra = ra - ra.mean(1, keepdims=True)
    rb = rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    num = (ra * rb).sum(1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _unit(m: np.ndarray) -> np.ndarray:
    top = m.max()
    return m / top if top > 0 else np.zeros_like(m)


def ssim_maps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM between (N, H, W) non-negative maps, each scaled to [0, 1] by its maximum."""
    from skimage.metrics import structural_similarity

    out = []
    for x, y in zip(a, b):
        win = min(7, x.shape[0], x.shape[1])
        win = win if win % 2 == 1 else win - 1
        out.append(structural_similarity(_unit(x), _unit(y), data_range=1.0, win_size=win))
    return np.asarray(out)


def hog_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of HOG descriptors of (N, H, W) maps (scaled to [0, 1])."""
    from skimage.feature import hog

    out = []
    for x, y in zip(a, b):
        ppc = max(2, min(x.shape) // 8)
        kw = dict(orientations=9, pixels_per_cell=(ppc, ppc), cells_per_block=(2, 2), feature_vector=True)
        hx, hy = hog(_unit(x), **kw), hog(_unit(y), **kw)
        if hx.std() == 0 or hy.std() == 0:
            out.append(0.0)
        else:
            out.append(float(np.corrcoef(hx, hy)[0, 1]))
    return np.asarray(out)


def similarity(maps: Tensor, reference: Tensor, metrics: Sequence[str] = SIMILARITIES) -> dict[str, np.ndarray]:
    """Per-image similarity of ``maps`` to ``reference`` (both (N, C, H, W)) by each metric."""
    bad = [m for m in metrics if m not in SIMILARITIES]
    if bad:
        raise UserError(f"similarity: unknown metric(s) {bad}; expected {', '.join(SIMILARITIES)}")
    if maps.shape != reference.shape:
        raise UserError(f"similarity: shapes differ, {tuple(maps.shape)} vs {tuple(reference.shape)}")
    out: dict[str, np.ndarray] = {}
    n = maps.shape[0]
    abs_m, abs_r = _maps2d(maps, True), _maps2d(reference, True)
    for m in metrics:
        if m == "spearman_abs":
            out[m] = spearman_rows(abs_m.reshape(n, -1), abs_r.reshape(n, -1))
        elif m == "spearman":
            out[m] = spearman_rows(_maps2d(maps, False).reshape(n, -1), _maps2d(reference, False).reshape(n, -1))
        elif m == "ssim":
            out[m] = ssim_maps(abs_m, abs_r)
        else:
            out[m] = hog_similarity(abs_m, abs_r)
    return out


# ----------------------------------------------------------------------------- the test


def randomization_test(
    model: nn.Module,
    images: Tensor,
    target: Target,
    method: str = "guided",
    order: str = "top_down",
    metrics: Sequence[str] = SIMILARITIES,
    seed: int = 0,
    randomize: Callable[[nn.Module, int], None] | None = None,
    explain: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    progress: bool = False,
    **method_opts: Any,
) -> dict[str, Any]:
    """Model parameter randomisation test (Adebayo et al. 2018, Sec. 3.1).

    Maps come from ``saliency(model, images, target, method, **method_opts)`` or from
    ``explain(model, images, target)``. Returns a dict with ``layers`` (the randomised
    layer at each step, in randomisation order), ``order``, ``method``, and per metric
    ``{"mean": [per step], "per_image": [[per image] per step]}``; the similarity of the
    original model with itself is step 0 (``layers[0] == "original"``).
    """
    x = check_images(images)
    t = check_target(model, x, target)
    fn = explain or (lambda mdl, xx, tt: saliency(mdl, xx, tt, method, **method_opts))
    ref = fn(model, x, t).detach()
    names = ["original"]
    per: dict[str, list[list[float]]] = {m: [] for m in metrics}
    sims = similarity(ref, ref, metrics)
    for m in metrics:
        per[m].append(sims[m].tolist())
    steps = randomized_models(model, order=order, seed=seed, randomize=randomize)
    for name, rmodel in track(steps, f"sanity {order}", total=len(parametrised_layers(model)), unit="layer", enabled=progress):
        maps = fn(rmodel, x, t).detach()
        sims = similarity(maps, ref, metrics)
        names.append(name)
        for m in metrics:
            per[m].append(sims[m].tolist())
    return {
        "method": method if explain is None else getattr(explain, "__name__", "custom"),
        "order": order,
        "layers": names,
        "metrics": {m: {"mean": [float(np.mean(v)) for v in per[m]], "per_image": per[m]} for m in metrics},
    }


def cascading_randomization(model: nn.Module, images: Tensor, target: Target, method: str = "guided", **kw: Any) -> dict[str, Any]:
    """Cascading (top-down) randomisation: :func:`randomization_test` with ``order="top_down"``."""
    return randomization_test(model, images, target, method, order="top_down", **kw)


def independent_randomization(model: nn.Module, images: Tensor, target: Target, method: str = "guided", **kw: Any) -> dict[str, Any]:
    """Independent (one layer at a time) randomisation: ``order="independent"``."""
    return randomization_test(model, images, target, method, order="independent", **kw)


def sanity_curves(
    models: Mapping[str, nn.Module],
    images: Tensor,
    target: Target,
    methods: Sequence[str] = ("guided",),
    order: str = "top_down",
    metrics: Sequence[str] = SIMILARITIES,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    **method_opts: Any,
) -> dict[str, dict[str, Any]]:
    """Randomisation curves for several models (e.g. random, STD, ADV) and methods.

    Returns ``{model: {method: randomization_test(...)}}``; with ``path`` also a PNG:
    one panel per metric, similarity vs randomised layer, one line per model x method.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, mdl in models.items():
        out[name] = {}
        for meth in methods:
            out[name][meth] = randomization_test(mdl, images, target, meth, order=order, metrics=metrics, seed=seed, **method_opts)
    if path is not None:
        plot_curves(out, path, metrics)
    return out


def plot_curves(results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, metrics: Sequence[str] = SIMILARITIES) -> Path:
    """Draw ``sanity_curves`` results: one panel per metric (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False)
    for j, metric in enumerate(metrics):
        ax = axes[0, j]
        labels: list[str] = []
        for mname, per_method in results.items():
            for meth, res in per_method.items():
                ys = res["metrics"][metric]["mean"]
                labels = res["layers"]
                ax.plot(range(len(ys)), ys, marker="o", ms=3, label=f"{mname} / {meth}")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.set_ylim(-1.05 if metric.startswith("spearman") or metric == "hog" else -0.05, 1.05)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("randomised up to layer", fontsize=7)
    axes[0, 0].set_ylabel("similarity to original map", fontsize=8)
    axes[0, -1].legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


__all__ = [
    "ORDERS",
    "SIMILARITIES",
    "cascading_randomization",
    "hog_similarity",
    "independent_randomization",
    "parametrised_layers",
    "plot_curves",
    "randomization_test",
    "randomized_models",
    "reset_layer",
    "sanity_curves",
    "similarity",
    "spearman_rows",
    "ssim_maps",
]
