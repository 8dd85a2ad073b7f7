"""Neuron analysis (Chen et al. 2020, "Intriguing generalization and simplicity of adversarially
trained neural networks", Sec. 5): adversarial training makes units (1) smoother, (2) tuned to
lower-level concepts (texture, colour) and (3) simpler (fewer concepts per unit).

Smoothness, of first-layer filters or of channel visualisations (any (N, C, H, W) images):

* **total variation** normalised by the L1 norm:
  ``TV(w) = (sum |w[:, i+1, j] - w[:, i, j]| + sum |w[:, i, j+1] - w[:, i, j]|) / sum |w|``
  (scale-free; 0 for a constant filter);
* **high-frequency share**: the share of the Fourier energy (summed over channels, DC bin left
  out) at radius beyond ``cutoff`` (default 0.5) in units of the Nyquist frequency, i.e. beyond
  half the Nyquist radius. Items smaller than ``pad_to`` (default 32) are zero-padded to
  ``pad_to x pad_to`` first, so a 3x3 filter's spectrum is sampled finely enough to split.

Concept selectivity, at chosen layers (names from ``dict(model.named_modules())``), using the
procedural set's factors (shape, texture, colour). Each channel's response to an image is its
mean activation over spatial positions. Then, per channel:

* **eta-squared** per factor (correlation ratio, one-way ANOVA):
  ``eta^2 = SS_between / SS_total = sum_g n_g (mean_g - mean)^2 / sum_i (a_i - mean)^2``, the
  share of the channel's variance over images that the factor explains; ``nan`` for a channel
  that never varies. The **best factor** is the arg-max.
* **number of concepts** (the simplicity measure, an analogue of Network Dissection's concept
  count used by Chen et al.): the number of factor values (a "concept" is e.g. shape = 3 or
  colour = 7; 30 in all on the procedural set) whose mean activation exceeds the channel's mean
  over all images by more than ``z`` (default 1.0) standard deviations. A channel that never
  varies detects no concept.

Factors must vary independently for these to mean anything: on the procedural set's train and
test splits texture copies shape, so use its ``conflict`` split (shape, texture, colour drawn
independently); perfectly confounded factor pairs are listed under ``confounded``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from robustlens.data.base import ImageSet
from robustlens.errors import UserError
from robustlens.probes.transforms import frequency_radius
from robustlens.plot import save_figure


# ---------------------------------------------------------------------------- smoothness
def _check_items(w: Tensor, what: str) -> Tensor:
    if not isinstance(w, Tensor) or w.dim() != 4:
        raise UserError(f"{what}: expected a tensor (N, C, H, W), got {tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__}")
    return w.detach().double().cpu()


def total_variation(w: Tensor) -> Tensor:
    """Total variation of each item of (N, C, H, W), normalised by its L1 norm (N,)."""
    w = _check_items(w, "total_variation")
    tv = (w[:, :, 1:] - w[:, :, :-1]).abs().sum((1, 2, 3)) + (w[..., 1:] - w[..., :-1]).abs().sum((1, 2, 3))
    norm = w.abs().sum((1, 2, 3))
    return torch.where(norm > 0, tv / norm.clamp_min(1e-300), torch.full_like(tv, float("nan")))


def high_frequency_share(w: Tensor, cutoff: float = 0.5, pad_to: int = 32) -> Tensor:
    """Share of the non-DC Fourier energy beyond ``cutoff`` x Nyquist, per item (N,)."""
    w = _check_items(w, "high_frequency_share")
    h, wd = w.shape[-2:]
    H, W = max(h, pad_to), max(wd, pad_to)
    p = w.new_zeros(w.shape[0], w.shape[1], H, W)
    p[..., :h, :wd] = w
    power = torch.fft.fft2(p).abs().pow(2).sum(1)  # (N, H, W)
    r = frequency_radius(H, W).double()
    power[:, 0, 0] = 0.0
    total = power.sum((1, 2))
    high = (power * (r > cutoff)).sum((1, 2))
    return torch.where(total > 0, high / total.clamp_min(1e-300), torch.full_like(total, float("nan")))


def smoothness(w: Tensor, cutoff: float = 0.5, pad_to: int = 32) -> dict[str, Any]:
    """TV and high-frequency share of every item, with their means and medians."""
    tv = total_variation(w)
    hf = high_frequency_share(w, cutoff, pad_to)
    return {
        "tv": tv.tolist(), "hf_share": hf.tolist(),
        "tv_mean": float(np.nanmean(tv.numpy())), "tv_median": float(np.nanmedian(tv.numpy())),
        "hf_share_mean": float(np.nanmean(hf.numpy())), "hf_share_median": float(np.nanmedian(hf.numpy())),
    }


# ---------------------------------------------------------------------------- layers
def first_layer_stats(model: nn.Module) -> dict[str, Any]:
    """Mean |w| of ``model.first_conv`` (main paper Sec. 4.1: ADV's are smaller), its number
    of filters and its kernel size (its smoothness: :func:`smoothness`)."""
    w = model.first_conv.weight.detach().float().cpu()
    return {"first_layer_norm": float(w.abs().mean()), "filters": int(w.shape[0]), "kernel": list(w.shape[2:])}


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """``dict(model.named_modules())[name]``; a wrong name lists the valid ones."""
    mods = dict(model.named_modules())
    if name not in mods or name == "":
        valid = [n for n in mods if n]
        raise UserError(f"layer: unknown layer {name!r}; valid layers: {', '.join(valid)}")
    return mods[name]


def default_layers(model: nn.Module, max_layers: int = 4) -> list[str]:
    """Up to ``max_layers`` ReLU modules spread over the depth (convolutions if no ReLU)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    if not names:
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if len(names) <= max_layers:
        return names
    pick = np.linspace(0, len(names) - 1, max_layers).round().astype(int)
    return [names[i] for i in dict.fromkeys(pick.tolist())]


@torch.no_grad()
def channel_activations(
    model: nn.Module, layers: Sequence[str], data: ImageSet | Tensor, batch_size: int = 256,
    device: str | torch.device | None = None,
) -> dict[str, Tensor]:
    """Mean activation over spatial positions of every channel at every layer: {layer: (N, C)}."""
    mods = {name: get_layer(model, name) for name in layers}
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    store: dict[str, Tensor] = {}

    def hook(name):
        def fn(_m, _inp, out):
            o = out[0] if isinstance(out, (tuple, list)) else out
            store[name] = (o.mean(tuple(range(2, o.dim()))) if o.dim() > 2 else o).detach().float().cpu()
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in mods.items()]
    was = model.training
    model.eval().to(dev)
    out: dict[str, list[Tensor]] = {n: [] for n in layers}
    n = len(data) if isinstance(data, ImageSet) else data.shape[0]
    try:
        for s in range(0, n, batch_size):
            x = data.float(slice(s, s + batch_size), dev) if isinstance(data, ImageSet) else data[s : s + batch_size].to(dev)
            store.clear()
            model(x)
            for name in layers:
                out[name].append(store[name])
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return {name: torch.cat(v) for name, v in out.items()}


# ---------------------------------------------------------------------------- selectivity
def eta_squared(acts: Tensor, groups: Tensor) -> Tensor:
    """Correlation ratio of each column of ``acts`` (N, C) on the grouping ``groups`` (N,): (C,)."""
    a = torch.as_tensor(acts).double()
    if a.dim() == 1:
        a = a.unsqueeze(1)
    g = torch.as_tensor(groups).long().flatten()
    if a.shape[0] != g.shape[0] or a.shape[0] == 0:
        raise UserError(f"eta_squared: {a.shape[0]} activations but {g.shape[0]} group labels")
    _, inv = torch.unique(g, return_inverse=True)
    k = int(inv.max()) + 1
    counts = torch.bincount(inv, minlength=k).double()
    sums = torch.zeros(k, a.shape[1], dtype=torch.float64).index_add_(0, inv, a)
    means = sums / counts.unsqueeze(1)
    grand = a.mean(0)
    ss_between = (counts.unsqueeze(1) * (means - grand) ** 2).sum(0)
    ss_total = ((a - grand) ** 2).sum(0)
    return torch.where(ss_total > 1e-12 * (a**2).sum(0).clamp_min(1e-300), ss_between / ss_total.clamp_min(1e-300),
                       torch.full_like(ss_total, float("nan")))


def concept_selectivity(acts: Tensor, factors: Tensor, factor_names: Sequence[str], z: float = 1.0) -> dict[str, Any]:
    """Per channel: eta-squared per factor, the best factor, and the number of concepts."""
    a = torch.as_tensor(acts).double()
    f = torch.as_tensor(factors).long()
    if f.dim() != 2 or f.shape[0] != a.shape[0] or f.shape[1] != len(factor_names):
        raise UserError(f"concept_selectivity: factors {tuple(f.shape)} do not match {a.shape[0]} images and {list(factor_names)}")
    eta = torch.stack([eta_squared(a, f[:, j]) for j in range(f.shape[1])], 1)  # (C, K)
    mean, std = a.mean(0), a.std(0, unbiased=False)
    counts = torch.zeros(a.shape[1], dtype=torch.long)
    concepts: list[list[str]] = [[] for _ in range(a.shape[1])]
    for j, fname in enumerate(factor_names):
        for v in torch.unique(f[:, j]).tolist():
            gm = a[f[:, j] == v].mean(0)
            on = (gm > mean + z * std) & (std > 0)
            counts += on.long()
            for c in torch.nonzero(on).flatten().tolist():
                concepts[c].append(f"{fname}={v}")
    # factors that always move together (e.g. texture copies shape in the train/test splits)
    # cannot be told apart: flag them; use the cue-conflict split, where they vary independently
    confounded = [
        [factor_names[i], factor_names[j]]
        for i in range(f.shape[1]) for j in range(i + 1, f.shape[1])
        if len(torch.unique(f[:, [i, j]], dim=0)) == max(len(torch.unique(f[:, i])), len(torch.unique(f[:, j])))
    ]
    valid = ~torch.isnan(eta).all(1)
    best = torch.where(valid, torch.nan_to_num(eta, nan=-1.0).argmax(1), torch.full((a.shape[1],), -1, dtype=torch.long))
    return {
        "factor_names": list(factor_names),
        "eta_squared": eta.tolist(),
        "best_factor": [factor_names[b] if b >= 0 else None for b in best.tolist()],
        "n_concepts": counts.tolist(),
        "concepts": concepts,
        "z": z,
        "confounded": confounded,
    }


def _summarise(sel: dict[str, Any]) -> dict[str, Any]:
    eta = np.asarray(sel["eta_squared"], dtype=float)
    names = sel["factor_names"]
    best = [b for b in sel["best_factor"] if b is not None]
    nc = np.asarray(sel["n_concepts"], dtype=float)
    return {
        "channels": len(sel["n_concepts"]),
        "mean_eta_squared": {n: float(np.nanmean(eta[:, j])) if eta.size else float("nan") for j, n in enumerate(names)},
        "best_factor_share": {n: (best.count(n) / len(best) if best else float("nan")) for n in names},
        "mean_concepts": float(nc.mean()) if nc.size else float("nan"),
        "median_concepts": float(np.median(nc)) if nc.size else float("nan"),
        "share_no_concept": float((nc == 0).mean()) if nc.size else float("nan"),
    }


def analyse_model(
    model: nn.Module, data: ImageSet | None = None, layers: Sequence[str] | None = None, batch_size: int = 256,
    device: str | torch.device | None = None, visualisations: Mapping[str, Tensor] | None = None, z: float = 1.0,
) -> dict[str, Any]:
    """First-layer filter smoothness, smoothness of given channel visualisations
    (``{layer: (N, C, H, W) images}``) and concept selectivity at ``layers`` on ``data``
    (which must carry factors; skipped when ``data`` is None)."""
    conv = model.first_conv if hasattr(model, "first_conv") else next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    out: dict[str, Any] = {"first_layer": smoothness(conv.weight)}
    if visualisations:
        out["visualisations"] = {name: smoothness(v) for name, v in visualisations.items()}
    if data is not None:
        if data.factors is None or not data.factor_names:
            raise UserError(f"{data.name or 'data'}: concept selectivity needs factor labels (the procedural set 'trifeature')")
        layers = list(layers) if layers else default_layers(model)
        acts = channel_activations(model, layers, data, batch_size, device)
        out["layers"] = {}
        for name in layers:
            sel = concept_selectivity(acts[name], data.factors, data.factor_names, z)
            out["layers"][name] = {"summary": _summarise(sel), **sel}
    return out


def compare_summary(results: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, layer) with the headline numbers, for a side-by-side table."""
    rows = []
    for mn, res in results.items():
        fl = res["first_layer"]
        rows.append({"model": mn, "layer": "first_conv(filters)", "tv_mean": fl["tv_mean"], "hf_share_mean": fl["hf_share_mean"]})
        for layer, r in res.get("layers", {}).items():
            s = r["summary"]
            row = {"model": mn, "layer": layer, "channels": s["channels"], "mean_concepts": s["mean_concepts"],
                   "share_no_concept": s["share_no_concept"]}
            row.update({f"eta2_{k}": v for k, v in s["mean_eta_squared"].items()})
            row.update({f"best_{k}": v for k, v in s["best_factor_share"].items()})
            rows.append(row)
    return rows


def plot_neurons(results: Mapping[str, dict[str, Any]], path: str | Path) -> Path:
    """Histograms, models overlaid: first-layer TV and high-frequency share, concepts per channel
    and best-factor shares (all analysed layers pooled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for mn, res in results.items():
        fl = res["first_layer"]
        axes[0].hist([v for v in fl["tv"] if v == v], bins=20, alpha=0.5, label=mn)
        axes[1].hist([v for v in fl["hf_share"] if v == v], bins=20, range=(0, 1), alpha=0.5, label=mn)
        nc = [c for r in res.get("layers", {}).values() for c in r["n_concepts"]]
        if nc:
            axes[2].hist(nc, bins=np.arange(-0.5, max(nc) + 1.5), alpha=0.5, label=mn)
    axes[0].set(title="first-layer filters: TV / L1", xlabel="normalised total variation", ylabel="filters")
    axes[1].set(title="first-layer filters: high-freq. share", xlabel="energy share beyond Nyquist/2")
    axes[2].set(title="concepts per channel", xlabel="number of concepts", ylabel="channels")
    models = list(results)
    fnames: list[str] = []
    for res in results.values():
        for r in res.get("layers", {}).values():
            fnames = r["factor_names"]
    width = 0.8 / max(1, len(models))
    for j, mn in enumerate(models):
        best = [b for r in results[mn].get("layers", {}).values() for b in r["best_factor"] if b is not None]
        vals = [best.count(f) / len(best) if best else 0 for f in fnames]
        axes[3].bar([i + j * width for i in range(len(fnames))], vals, width, label=mn)
    axes[3].set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(fnames))], fnames)
    axes[3].set(title="factor explaining a channel best", ylabel="share of channels")
    concepts = any(res.get("layers") for res in results.values())
    for ax in axes if concepts else axes[:2]:
        ax.legend()
    for ax in [] if concepts else axes[2:]:  # data without factor labels: say so, no empty legend
        ax.text(0.5, 0.5, "not measured:\nthe data has no factor labels", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
