"""Accuracy under each probe (Itazuri et al. 2019, Sec. 4.1, Fig. 5/7 and Table 2; Chen et al.
2020, texture-less images), for any set of models.

:func:`evaluate_probes` transforms every batch once per (probe, level) and feeds the result to
every model, so all models see exactly the same transformed images (stylisation draws its
styles from a generator seeded by ``seed`` and the batch index). The result is a tidy table:
one row per (model, probe, level) with top-1 and top-5 accuracy (top-5 is top-``min(5, C)``:
with five classes or fewer it is 1.0 by definition). The row with ``probe == "clean"`` is the
untransformed accuracy.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from robustlens.data.base import ImageSet
from robustlens.errors import UserError
from robustlens.io import atomic_path, write_json_atomic
from robustlens.probes.transforms import Probe, ProbeContext, get_probe
from robustlens.progress import Progress
from robustlens.plot import save_figure

COLUMNS = ("model", "probe", "level", "level_name", "top1", "top5", "n")


def _as_probes(probes: Sequence[str | Probe] | Mapping[str, Probe]) -> list[Probe]:
    if isinstance(probes, Mapping):
        probes = list(probes.values())
    out = [get_probe(p) if isinstance(p, str) else p for p in probes]
    if not out:
        raise UserError("probes: expected at least one probe")
    return out


def _topk_hits(logits: Tensor, y: Tensor) -> tuple[int, int]:
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top == y.view(-1, 1)
    return int(hit[:, 0].sum()), int(hit.any(1).sum())


@torch.no_grad()
def evaluate_probes(
    models: Mapping[str, nn.Module],
    data: ImageSet,
    probes: Sequence[str | Probe] | Mapping[str, Probe],
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    style_pool: Tensor | None = None,
    pool_labels: Tensor | None = None,
    adain: Any = None,
    seed: int = 0,
    progress: bool | None = None,
) -> list[dict]:
    """Top-1 / top-5 accuracy of every model on ``data`` under every probe level.

    Args:
        models: ``{name: model}``; models take [0, 1] images (the robustlens contract).
        data: the evaluation split; its ``masks`` feed silhouettes and edges.
        probes: names from :data:`~robustlens.probes.transforms.PROBES` or :class:`Probe` objects
            (``get_probe("blur").with_params(levels=[0, 1, 2], kernel_size=5)``).
        style_pool: images for ``stylize`` (default: ``data`` itself, styles drawn from images of
            another class).
        progress: show progress (default True: a tqdm bar on a terminal, a heartbeat line
            otherwise, :mod:`robustlens.progress`).

    Returns:
        A list of rows ``{model, probe, level, level_name, top1, top5, n}``; ``probe == "clean"``
        is the untransformed accuracy.
    """
    if not models:
        raise UserError("models: expected at least one model")
    if len(data) == 0:
        raise UserError(f"{data.name or 'data'}: no images to evaluate")
    if int(batch_size) <= 0:
        raise UserError(f"batch_size: expected a positive integer, got {batch_size!r}")
    plist = _as_probes(probes)
    dev = torch.device(device) if device is not None else next(iter(models.values())).parameters().__next__().device
    if any(p.name == "stylize" for p in plist) and style_pool is None:
        style_pool, pool_labels = data.images, data.labels
    states = {name: m.training for name, m in models.items()}
    for m in models.values():
        m.eval().to(dev)
    cells: list[tuple[str, Probe | None, Any]] = [("clean", None, None)]
    cells += [(p.name, p, lv) for p in plist for lv in p.levels]
    hits = {(mn, i): [0, 0] for mn in models for i in range(len(cells))}
    n = len(data)
    batches = range(0, n, int(batch_size))
    bar = Progress("probes", n, enabled=True if progress is None else progress)
    try:
        for b, start in enumerate(batches):
            idx = torch.arange(start, min(n, start + int(batch_size)))
            x = data.float(idx, dev)
            y = data.labels[idx].to(dev)
            masks = None if data.masks is None else data.masks[idx].to(dev)
            chain: dict[str, tuple] = {}  # iterative probes: (level, images) of the last level done
            for i, (pname, probe, level) in enumerate(cells):
                if probe is None:
                    xt = x
                else:
                    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + b * 7919 + i)
                    ctx = ProbeContext(masks=masks, labels=data.labels[idx], style_pool=style_pool,
                                       pool_labels=pool_labels, generator=g, adain=adain)
                    last = chain.get(pname) if probe.iterative else None
                    if last is not None and last[0] <= level:
                        xt = probe.apply(last[1], level - last[0], ctx)
                    else:
                        xt = probe.apply(x, level, ctx)
                    if probe.iterative:
                        chain[pname] = (level, xt)
                for mn, model in models.items():
                    t1, t5 = _topk_hits(model(xt), y)
                    hits[(mn, i)][0] += t1
                    hits[(mn, i)][1] += t5
                bar.update(0, step=f"batch {b + 1}/{len(batches)} {pname} {'' if level is None else level}".rstrip())
            bar.update(len(idx))
    finally:
        bar.close()
        for name, m in models.items():
            m.train(states[name])
    rows = []
    for mn in models:
        for i, (pname, probe, level) in enumerate(cells):
            t1, t5 = hits[(mn, i)]
            rows.append({
                "model": mn, "probe": pname, "level": level,
                "level_name": None if probe is None else probe.level_name,
                "top1": t1 / n, "top5": t5 / n, "n": n,
            })
    return rows


def write_table(rows: Sequence[dict], stem: str | Path) -> tuple[Path, Path]:
    """Write ``rows`` as ``stem.json`` and ``stem.csv`` (atomically); return both paths."""
    stem = Path(stem)
    jpath, cpath = stem.with_suffix(".json"), stem.with_suffix(".csv")
    write_json_atomic(jpath, list(rows))
    cols = list(COLUMNS) + sorted({k for r in rows for k in r} - set(COLUMNS))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    with atomic_path(cpath) as tmp:
        tmp.write_text(buf.getvalue())
    return jpath, cpath


def plot_curves(rows: Sequence[dict], path: str | Path, metric: str = "top1", probes: Sequence[str] | None = None) -> Path:
    """Accuracy curves as a PNG: one panel per multi-level probe (accuracy against sigma,
    repeats, radius), plus one panel of bars for the single-level probes (with clean accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    names = [p for p in dict.fromkeys(r["probe"] for r in rows) if p != "clean"]
    if probes is not None:
        names = [p for p in names if p in probes]
    multi = [p for p in names if any(r["probe"] == p and r["level"] is not None for r in rows)]
    single = [p for p in names if p not in multi]
    panels = len(multi) + (1 if single else 0)
    if panels == 0:
        raise UserError("plot_curves: no probe rows to plot")
    cols = min(3, panels)
    nrows = math.ceil(panels / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax, p in zip(flat, multi):
        for mn in models:
            pts = [(r["level"], r[metric]) for r in rows if r["model"] == mn and r["probe"] == p]
            ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=mn)
        lname = next((r["level_name"] for r in rows if r["probe"] == p), None) or "level"
        ax.set(title=p, xlabel=lname, ylabel=f"{metric} accuracy", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend()
    if single:
        ax = flat[len(multi)]
        cats = ["clean"] + single
        width = 0.8 / max(1, len(models))
        for j, mn in enumerate(models):
            vals = [next((r[metric] for r in rows if r["model"] == mn and r["probe"] == c), float("nan")) for c in cats]
            ax.bar([i + j * width for i in range(len(cats))], vals, width, label=mn)
        ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(cats))], cats, rotation=30)
        ax.set(title="single-level probes", ylabel=f"{metric} accuracy", ylim=(0, 1.02))
        ax.legend()
    for ax in flat[panels:]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
