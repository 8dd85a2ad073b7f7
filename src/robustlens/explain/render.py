"""Rendering saliency maps the way the main paper shows them (matplotlib, Agg backend).

Display modes for one map (C, H, W):

* ``"rgb"``: the raw colour gradient (main paper App. A.1: "we use the raw gradients ...
  because the colour information can be important"): each map is clipped to
  mean +- 3 standard deviations (over all its values) and scaled linearly to [0, 1].
* ``"signed"``: channels summed to one (H, W) map, clipped to +-3 standard deviations
  around 0 (std of the summed map), divided by that bound -> [-1, 1], drawn with the
  diverging ``bwr`` colour map centred at 0 (blue negative, red positive).
* ``"abs"``: sum over channels of |a|, clipped at its mean + 3 std, divided by that bound
  -> [0, 1], drawn in grey (white = salient).

Greyscale (1-channel) images and maps: images are drawn in grey (the channel repeated);
``"rgb"`` shows the one channel's clipped gradient in grey, since there is no colour to show;
``"signed"`` and ``"abs"`` are unchanged (the sum over channels is over one).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from robustlens.errors import UserError
from robustlens.plot import save_figure

MODES = ("rgb", "signed", "abs")


def _np(a: Tensor | np.ndarray) -> np.ndarray:
    return a.detach().cpu().double().numpy() if isinstance(a, Tensor) else np.asarray(a, dtype=np.float64)


def display_map(attr: Tensor | np.ndarray, mode: str = "signed", clip_std: float = 3.0) -> np.ndarray:
    """One map (C, H, W) or (H, W) -> an array ready to draw.

    Returns (H, W, 3) in [0, 1] for ``"rgb"``, (H, W) in [-1, 1] for ``"signed"``,
    (H, W) in [0, 1] for ``"abs"`` (see the module docstring for the clipping rule).
    """
    if mode not in MODES:
        raise UserError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    a = _np(attr)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise UserError(f"attribution: expected (C, H, W) or (H, W), got shape {a.shape}")
    if mode == "rgb":
        mu, sd = a.mean(), a.std()
        lo, hi = mu - clip_std * sd, mu + clip_std * sd
        if hi - lo <= 0:
            return np.full(a.shape[1:] + (3,), 0.5)
        out = (np.clip(a, lo, hi) - lo) / (hi - lo)
        out = np.moveaxis(out, 0, -1)
        return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out[..., :3]
    if mode == "signed":
        s = a.sum(0)
        bound = clip_std * np.sqrt(np.mean(s**2))
        return np.clip(s / bound, -1, 1) if bound > 0 else np.zeros_like(s)
    s = np.abs(a).sum(0)
    bound = s.mean() + clip_std * s.std()
    return np.clip(s / bound, 0, 1) if bound > 0 else np.zeros_like(s)


def image_hwc(image: Tensor | np.ndarray) -> np.ndarray:
    """(C, H, W) image in [0, 1] -> (H, W, 3) for imshow (grey images repeated)."""
    a = np.clip(_np(image), 0, 1)
    if a.ndim == 2:
        a = a[None]
    a = np.moveaxis(a, 0, -1)
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a[..., :3]


def overlay(image: Tensor | np.ndarray, attr: Tensor | np.ndarray, alpha: float = 0.6, mode: str = "abs", cmap: str | None = None) -> np.ndarray:
    """Blend a coloured saliency map over a grey version of the image: (H, W, 3) in [0, 1].

    ``mode`` "abs" uses the ``inferno`` map on [0, 1], "signed" ``bwr`` on [-1, 1]; the
    map's opacity grows with its magnitude (times ``alpha``).
    """
    import matplotlib

    if mode not in ("abs", "signed"):
        raise UserError(f"overlay mode: expected 'abs' or 'signed', got {mode!r}")
    m = display_map(attr, mode)
    img = image_hwc(image)
    grey = np.repeat(img.mean(-1, keepdims=True), 3, axis=-1)
    if mode == "abs":
        colour = matplotlib.colormaps[cmap or "inferno"](m)[..., :3]
        weight = alpha * m[..., None]
    else:
        colour = matplotlib.colormaps[cmap or "bwr"]((m + 1) / 2)[..., :3]
        weight = alpha * np.abs(m)[..., None]
    return np.clip((1 - weight) * grey + weight * colour, 0, 1)


def _draw(ax, arr: np.ndarray, mode: str) -> None:
    if arr.ndim == 3:
        ax.imshow(arr, interpolation="nearest")
    elif mode == "signed":
        ax.imshow(arr, cmap="bwr", vmin=-1, vmax=1, interpolation="nearest")
    else:
        ax.imshow(arr, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def saliency_grid(
    images: Tensor,
    maps: Mapping[str, Tensor],
    path: str | os.PathLike,
    mode: str = "signed",
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    show_images: bool = True,
    overlay_maps: bool = False,
    cell: float = 1.6,
) -> Path:
    """Side-by-side figure: rows = images, columns = the entries of ``maps``.

    ``maps`` maps a column title (e.g. ``"guided / ADV"``; methods x models) to maps of
    the images' shape. The first column shows the image itself. Written atomically as PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    if images.dim() != 4:
        raise UserError(f"images: expected (N, C, H, W), got shape {tuple(images.shape)}")
    n = images.shape[0]
    for k, v in maps.items():
        if v.shape[0] != n:
            raise UserError(f"maps[{k!r}]: {v.shape[0]} maps for {n} images")
    cols = (["image"] if show_images else []) + list(maps)
    fig, axes = plt.subplots(n, len(cols), figsize=(cell * len(cols), cell * n + (0.4 if title else 0.1)), squeeze=False)
    for i in range(n):
        for j, name in enumerate(cols):
            ax = axes[i, j]
            if name == "image" and show_images:
                _draw(ax, image_hwc(images[i]), "rgb")
            elif overlay_maps:
                _draw(ax, overlay(images[i], maps[name][i], mode="signed" if mode == "signed" else "abs"), mode)
            else:
                _draw(ax, display_map(maps[name][i], mode), mode)
            if i == 0:
                ax.set_title(name, fontsize=7)
        if row_labels is not None:
            axes[i, 0].set_ylabel(str(row_labels[i]), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def image_grid(
    images: Tensor | np.ndarray,
    path: str | os.PathLike,
    ncol: int | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    cell: float = 1.2,
) -> Path:
    """Save images (N, C, H, W) in [0, 1] as a PNG grid (feature visualisations, filters, generations)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    imgs = images if isinstance(images, Tensor) else torch.as_tensor(np.asarray(images))
    if imgs.dim() != 4 or imgs.shape[0] == 0:
        raise UserError(f"images: expected a non-empty (N, C, H, W), got shape {tuple(imgs.shape)}")
    n = imgs.shape[0]
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(cell * ncol, cell * nrow + (0.4 if title else 0.1)), squeeze=False)
    for k in range(nrow * ncol):
        ax = axes[k // ncol, k % ncol]
        ax.axis("off")
        if k < n:
            ax.imshow(image_hwc(imgs[k]), interpolation="nearest")
            if labels is not None:
                ax.set_title(str(labels[k]), fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


__all__ = ["MODES", "display_map", "image_grid", "image_hwc", "overlay", "saliency_grid"]
