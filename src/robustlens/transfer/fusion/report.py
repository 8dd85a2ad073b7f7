"""A fusion study's outputs: the Markdown and CSV tables, the Fig. 9-style bar chart (through
:mod:`robustlens.plot`) and :func:`write_outputs`, which writes them all atomically."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

from robustlens.io import write_bytes_atomic, write_json_atomic
from robustlens.plot import pyplot, save_figure


def table_markdown(table: Sequence[dict]) -> str:
    """Variants as rows, data sets (ordered by resolution) as columns: ``mean +- std`` in %."""
    cols: list[tuple[str, int]] = []
    for row in table:
        key = (row["dataset"], row["resolution"])
        if key not in cols:
            cols.append(key)
    cols.sort(key=lambda c: (c[1], c[0]))
    variants: list[str] = []
    for row in table:
        if row["variant"] not in variants:
            variants.append(row["variant"])
    cell = {(r["variant"], r["dataset"], r["resolution"]): r for r in table}
    best = {c: max((cell[(v, *c)]["mean"] for v in variants if (v, *c) in cell), default=None) for c in cols}
    lines = ["| variant | " + " | ".join(f"{n} {r}px" for n, r in cols) + " |", "| --- |" + " --- |" * len(cols)]
    for v in variants:
        cells = []
        for c in cols:
            r = cell.get((v, *c))
            if r is None:
                cells.append("")
                continue
            text = f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}"
            cells.append(f"**{text}**" if best[c] is not None and r["mean"] == best[c] else text)
        lines.append(f"| {v.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(table: Sequence[dict]) -> str:
    """One line per row of the table; ``accuracies`` space-separated."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["variant", "dataset", "resolution", "mean", "std", "repeats", "accuracies"])
    for r in table:
        w.writerow([r["variant"], r["dataset"], r["resolution"], f"{r['mean']:.6f}", f"{r['std']:.6f}", r["repeats"], " ".join(f"{a:.6f}" for a in r["accuracies"])])
    return buf.getvalue()


def plot_fusion(table: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Fig. 9 style: accuracy per data set (ordered by resolution), one bar group per variant."""
    plt = pyplot()
    cols = sorted({(r["dataset"], r["resolution"]) for r in table}, key=lambda c: (c[1], c[0]))
    variants: list[str] = []
    for r in table:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    cell = {(r["variant"], r["dataset"], r["resolution"]): r for r in table}
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cols) * max(1, len(variants)) / 4, 3.6))
    width = 0.8 / max(1, len(variants))
    colours = {"std": "#1f77b4", "adv": "#d62728", "std+std": "#6baed6", "adv+adv": "#fc9272", "std+adv": "#2ca02c"}
    lo = 1.0
    for j, v in enumerate(variants):
        xs, ms, ss = [], [], []
        for i, c in enumerate(cols):
            r = cell.get((v, *c))
            if r is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ms.append(100 * r["mean"])
            ss.append(100 * r["std"])
            lo = min(lo, r["mean"] - r["std"])
        ax.bar(xs, ms, width, yerr=ss, capsize=2, label=v.upper(), color=colours.get(v), edgecolor="black", linewidth=0.4)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([f"{n}\n{r}px" for n, r in cols])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(0.0, 100 * lo - 5), 100)
    ax.set_xlabel("target data set (ordered by resolution)")
    ax.legend(fontsize=7, ncol=min(5, len(variants)), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def write_outputs(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """``results.json``, ``table.csv``, ``table.md`` and ``fusion.png`` in ``out_dir`` (atomic)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "table.csv", "md": out / "table.md", "png": out / "fusion.png"}
    write_json_atomic(paths["json"], result)
    write_bytes_atomic(paths["csv"], table_csv(result["table"]).encode())
    cfg = result.get("config", {})
    header = f"Late fusion, mode={cfg.get('mode')}, epochs={cfg.get('epochs')}, lr={cfg.get('lr')}, repeats={cfg.get('repeats')}; test accuracy (%) mean ± std\n\n"
    write_bytes_atomic(paths["md"], (header + table_markdown(result["table"])).encode())
    plot_fusion(result["table"], paths["png"], title=f"late fusion ({cfg.get('mode')})")
    return paths
