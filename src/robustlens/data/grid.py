"""Grids of sample images (PNG, matplotlib Agg), for `robustlens data` and reports."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
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

    Each tile is captioned with its class name (and, for the procedural set, its texture and
    colour); boxes, when the set has them, are drawn in yellow. The tiles form one mosaic drawn
    with a single ``imshow`` (fast even for 64 tiles). Written atomically.
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
    H, W = imageset.resolution
    zoom = max(1, int(math.ceil(64 / max(H, W))))  # small images are enlarged (nearest)
    th, tw = H * zoom, W * zoom
    cap = max(12, th // 3) if titles else 0  # caption band above each tile, in mosaic pixels
    gap = max(2, th // 16)
    mosaic = np.full((rows * (th + cap + gap), cols * (tw + gap), 3), 255, np.uint8)
    imgs = imageset.images[idx]
    if imgs.shape[1] == 1:
        imgs = imgs.expand(-1, 3, -1, -1)
    imgs = imgs.permute(0, 2, 3, 1).numpy().repeat(zoom, 1).repeat(zoom, 2)
    origins = []
    for j in range(k):
        r, c = divmod(j, cols)
        y0, x0 = r * (th + cap + gap) + cap, c * (tw + gap)
        mosaic[y0 : y0 + th, x0 : x0 + tw] = imgs[j]
        origins.append((x0, y0))
    scale = 1.4 / 64  # inches per mosaic pixel at 64-pixel tiles
    fig = plt.figure(figsize=(mosaic.shape[1] * scale * 64 / max(th, 64), mosaic.shape[0] * scale * 64 / max(th, 64) + 0.3))
    ax = fig.add_axes((0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    for j, i in enumerate(idx.tolist()):
        x0, y0 = origins[j]
        if titles:
            ax.text(x0 + tw / 2, y0 - 1, _caption(imageset, i), ha="center", va="bottom", fontsize=4.5, linespacing=0.9)
        if show_boxes and imageset.boxes is not None:
            bx0, by0, bx1, by1 = (imageset.boxes[i] * zoom).tolist()
            ax.add_patch(Rectangle((x0 + bx0 - 0.5, y0 + by0 - 0.5), bx1 - bx0, by1 - by0, fill=False, ec="yellow", lw=0.5))
    fig.suptitle(f"{imageset.name} ({len(imageset)} images)", fontsize=7, y=0.995, va="top")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _caption(imageset: ImageSet, i: int) -> str:
    label = imageset.classes[int(imageset.labels[i])]
    if imageset.factors is not None and set(imageset.factor_names) == {"shape", "texture", "colour"}:
        from robustlens.data.trifeature import FACTOR_CLASSES

        names = [FACTOR_CLASSES[f][int(v)] for f, v in zip(imageset.factor_names, imageset.factors[i])]
        return "\n".join([label] + [v for v in names if v != label][:2])
    return label
