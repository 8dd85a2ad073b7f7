"""Figure helpers shared by every package: matplotlib on the Agg backend, atomic PNG writes,
and the two chart shapes the study's stages draw (grouped bars, lines with markers)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from robustlens.io import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 110, *, tight_layout: bool = False) -> Path:
    """Write ``fig`` as a PNG atomically (readers never see half a file) and close it
    (``tight_layout``: fit the axes to the figure first)."""
    plt = pyplot()
    path = Path(path)
    try:
        if tight_layout:
            fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


def _nan(v: float | None) -> float:
    return float("nan") if v is None else v


def bar_chart(
    groups: Mapping[str, Sequence[float | None]], categories: Sequence[str], path: str | os.PathLike, *,
    figsize: tuple[float, float] = (5, 3), ylim: tuple[float, float] = (0, 1.02), ylabel: str = "", title: str = "",
    value_labels: bool = False, dpi: int = 100,
) -> Path:
    """Grouped bars: one group per category, one bar per ``groups`` entry (its legend label);
    ``None`` values are left blank; ``value_labels`` writes each value above its bar."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=figsize)
    w = 0.8 / len(groups)
    for j, (name, values) in enumerate(groups.items()):
        vals = [_nan(v) for v in values]
        xs = [i + j * w for i in range(len(categories))]
        ax.bar(xs, vals, w, label=name)
        if value_labels:
            for xv, v in zip(xs, vals):
                ax.text(xv, v + 0.01, f"{v:.2f}", ha="center", fontsize=7)
    ax.set_xticks([i + w * (len(groups) - 1) / 2 for i in range(len(categories))], list(categories))
    ax.set(ylim=ylim, ylabel=ylabel, title=title)
    ax.legend()
    return save_figure(fig, path, dpi=dpi, tight_layout=True)


def line_chart(
    series: Mapping[str, Sequence[Sequence[float | None]]], path: str | os.PathLike, *,
    figsize: tuple[float, float] = (5, 3), xlabel: str = "", ylabel: str = "", ylim: tuple[float, float] | None = None,
    title: str = "", legend_fontsize: float | None = None, dpi: int = 100,
) -> Path:
    """Lines with markers, one per ``series`` entry (``[[x, y], ...]``; a ``None`` y is a gap)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=figsize)
    for name, pts in series.items():
        ax.plot([a for a, _ in pts], [_nan(b) for _, b in pts], marker="o", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_fontsize)
    return save_figure(fig, path, dpi=dpi, tight_layout=True)
