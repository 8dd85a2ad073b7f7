"""Grids of sample images (PNG, matplotlib Agg), for `robustlens data` and reports."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from robustlens.data.base import ImageSet
from robustlens.io import atomic_path


def pick_samples(imageset: ImageSet, n: int = 64, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` samples spread over the classes (round-robin, random within a class)."""
    n = min(n, len(imageset))
    g = torch.Generator().manual_seed(seed)
    per_class = [torch.nonzero(imageset.labels == c).squeeze(1) for c in range(imageset.num_classes)]
    per_class = [idx[torch.randperm(len(idx), generator=g)] for idx in per_class if len(idx)]
    out: list[int] = []
    depth = 0
    while len(out) < n:
        for idx in per_class:
            if depth < len(idx) and len(out) < n:
                out.append(int(idx[depth]))
        depth += 1
    return torch.tensor(sorted(out), dtype=torch.long)


def sample_grid(
    imageset: ImageSet,
    path: str | os.PathLike,
    n: int = 64,
    seed: int = 0,
    titles: bool = True,
    show_boxes: bool = True,
) -> Path:
    """Write a PNG grid of ``n`` images of ``imageset`` (spread over classes) to ``path``.

    Each tile is titled with its class name (and, for the procedural set, its texture and
    colour); boxes, when the set has them, are drawn in yellow. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    path = Path(path)
    if len(imageset) == 0 or n <= 0:
        raise ValueError(f"{imageset.name}: nothing to show")
    idx = pick_samples(imageset, n, seed)
    k = len(idx)
    cols = int(math.ceil(math.sqrt(k)))
    rows = int(math.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.6 + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for j, i in enumerate(idx.tolist()):
        ax = axes.flat[j]
        img = imageset.images[i].permute(1, 2, 0).numpy()
        if img.shape[2] == 1:
            ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        if titles:
            label = imageset.classes[int(imageset.labels[i])]
            if imageset.factors is not None and set(imageset.factor_names) == {"shape", "texture", "colour"}:
                from robustlens.data.trifeature import FACTOR_CLASSES

                names = [FACTOR_CLASSES[f][int(v)] for f, v in zip(imageset.factor_names, imageset.factors[i])]
                label = "\n".join([label] + [v for v in names if v != label][:2])
            ax.set_title(label, fontsize=5, pad=1.5)
        if show_boxes and imageset.boxes is not None:
            x0, y0, x1, y1 = imageset.boxes[i].tolist()
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=0.6))
    fig.suptitle(f"{imageset.name} ({len(imageset)} images)", fontsize=7)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.97))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
