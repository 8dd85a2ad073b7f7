"""Weakly supervised localisation from saliency maps (Aggarwal et al.; Zhang et al. 2016).

* :func:`saliency_box`: a box from one map. The map is reduced to (H, W) by
  sum_c |a| (for Grad-CAM, which repeats one map over channels, any channel is the same
  map up to the factor C). Pixels are kept by one of two thresholds:

  - ``mode="energy"`` (default): the smallest set of highest-valued pixels whose sum
    reaches ``fraction`` of the map's total (energy-based thresholding, e.g. 0.5);
  - ``mode="max"``: pixels >= ``fraction`` x max (Grad-CAM's / CAM's 15-20 % rule).

  The box is the bounding box of the largest 8-connected component of kept pixels
  (``component="largest"``, ``scipy.ndimage.label``) or of all kept pixels
  (``component="all"``). Boxes are ``(x0, y0, x1, y1)`` in pixels with x1, y1
  exclusive, like ``ImageSet.boxes``.
* :func:`box_iou`, :func:`box_accuracy` (share of IoU >= 0.5, the usual criterion).
* :func:`pointing_game` (Zhang et al. 2016, "Top-down neural attention by excitation
  backprop"): a hit when the map's maximum lies on the object, with a tolerance of 15
  pixels at 224 x 224, scaled to the image: tol = 15 x min(H, W) / 224 (e.g. 2.1 px at
  32 x 32). The object is the ground-truth mask, or the filled box when there is no mask.
* :func:`object_energy`: the share of a map's |saliency| inside the object mask.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from robustlens.errors import UserError


def _map2d(m: Tensor | np.ndarray) -> np.ndarray:
    a = m.detach().double().cpu().numpy() if isinstance(m, Tensor) else np.asarray(m, dtype=np.float64)
    if a.ndim == 3:
        a = np.abs(a).sum(0)
    if a.ndim != 2:
        raise UserError(f"saliency map: expected (H, W) or (C, H, W), got shape {a.shape}")
    return np.abs(a)


def keep_mask(m: Tensor | np.ndarray, fraction: float = 0.5, mode: str = "energy") -> np.ndarray:
    """Boolean (H, W) mask of the pixels kept by the energy or max threshold."""
    if not 0 < fraction <= 1:
        raise UserError(f"fraction: expected a number in (0, 1], got {fraction!r}")
    a = _map2d(m)
    if mode == "max":
        top = a.max()
        return a >= fraction * top if top > 0 else np.ones_like(a, dtype=bool)
    if mode != "energy":
        raise UserError(f"mode: expected 'energy' or 'max', got {mode!r}")
    total = a.sum()
    if total <= 0:
        return np.ones_like(a, dtype=bool)
    flat = a.ravel()
    order = np.argsort(-flat, kind="stable")
    csum = np.cumsum(flat[order])
    k = int(np.searchsorted(csum, fraction * total * (1 - 1e-12))) + 1
    keep = np.zeros(flat.shape, dtype=bool)
    keep[order[:k]] = True
    return keep.reshape(a.shape)


def saliency_box(
    m: Tensor | np.ndarray, fraction: float = 0.5, mode: str = "energy", component: str = "largest"
) -> tuple[int, int, int, int]:
    """Box (x0, y0, x1, y1), x1/y1 exclusive, around the salient pixels of one map."""
    from scipy import ndimage

    keep = keep_mask(m, fraction, mode)
    if component == "largest":
        lab, n = ndimage.label(keep, structure=np.ones((3, 3), dtype=int))
        if n > 1:
            sizes = ndimage.sum_labels(keep, lab, index=np.arange(1, n + 1))
            keep = lab == (int(np.argmax(sizes)) + 1)
    elif component != "all":
        raise UserError(f"component: expected 'largest' or 'all', got {component!r}")
    ys, xs = np.nonzero(keep)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def saliency_boxes(maps: Tensor, fraction: float = 0.5, mode: str = "energy", component: str = "largest") -> Tensor:
    """:func:`saliency_box` for each map of (N, C, H, W) or (N, H, W): float (N, 4)."""
    return torch.tensor([saliency_box(m, fraction, mode, component) for m in maps], dtype=torch.float32)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of matching rows of (N, 4) boxes (x0, y0, x1, y1), x1/y1 exclusive (areas in pixels)."""
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1, 4)
    b = torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4)
    if a.shape != b.shape:
        raise UserError(f"box_iou: {a.shape[0]} boxes vs {b.shape[0]}")
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = w * h
    area = lambda r: (r[:, 2] - r[:, 0]).clamp(min=0) * (r[:, 3] - r[:, 1]).clamp(min=0)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def box_accuracy(pred: Tensor, truth: Tensor, threshold: float = 0.5) -> float:
    """Share of predictions with IoU >= ``threshold`` (0.5: the usual localisation criterion)."""
    return float((box_iou(pred, truth) >= threshold).double().mean())


def tolerance_pixels(height: int, width: int, tolerance: float = 15.0, reference: int = 224) -> float:
    """Zhang et al.'s 15-pixel tolerance at 224 px, scaled to ``min(height, width)``."""
    return tolerance * min(height, width) / reference


def pointing_game(
    maps: Tensor,
    masks: Tensor | None = None,
    boxes: Tensor | None = None,
    tolerance: float = 15.0,
    reference: int = 224,
) -> np.ndarray:
    """Per-image hits (bool (N,)) of the pointing game (Zhang et al. 2016).

    The point is the argmax of sum_c |a| (first one in row-major order on ties); a hit when
    some object pixel lies within Euclidean distance ``tolerance_pixels`` of it.
    """
    n = maps.shape[0]
    if masks is None and boxes is None:
        raise UserError("pointing game: needs ground-truth masks or boxes")
    h, w = maps.shape[-2], maps.shape[-1]
    tol = tolerance_pixels(h, w, tolerance, reference)
    yy, xx = np.mgrid[0:h, 0:w]
    hits = np.zeros(n, dtype=bool)
    for i in range(n):
        a = _map2d(maps[i])
        py, px = np.unravel_index(int(np.argmax(a)), a.shape)
        if masks is not None:
            obj = masks[i].detach().cpu().numpy().astype(bool)
            if obj.shape != (h, w):
                raise UserError(f"masks: shape {obj.shape} differs from the maps' {(h, w)}")
        else:
            x0, y0, x1, y1 = [float(v) for v in boxes[i]]
            obj = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
        if not obj.any():
            continue
        d2 = (yy - py) ** 2 + (xx - px) ** 2
        hits[i] = bool((d2[obj] <= tol * tol).any())
    return hits


def object_energy(maps: Tensor, masks: Tensor) -> list[float]:
    """Share of each map's absolute saliency (summed over channels) inside the object mask:
    ``sum(|a| * mask) / sum(|a|)`` per image, for (N, C, H, W) maps and (N, H, W) masks."""
    a = maps.abs().sum(1)
    m = masks.to(a.dtype)
    return ((a * m).sum(dim=(1, 2)) / a.sum(dim=(1, 2)).clamp_min(1e-12)).tolist()


def evaluate_localization(
    model: nn.Module,
    imageset: Any,
    method: str = "gradcam",
    fraction: float = 0.5,
    mode: str = "energy",
    component: str = "largest",
    target: str = "label",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    **method_opts: Any,
) -> dict[str, Any]:
    """Box accuracy (IoU >= 0.5), mean IoU and pointing-game accuracy of ``method`` maps.

    ``imageset`` is an :class:`~robustlens.data.ImageSet` with ``boxes`` (and ideally
    ``masks``); maps are taken for the true label (``target="label"``) or the model's
    prediction (``"predicted"``).
    """
    from robustlens.explain.saliency import saliency

    if getattr(imageset, "boxes", None) is None:
        raise UserError(f"{getattr(imageset, 'name', 'data')}: localisation needs ground-truth boxes; this set has none")
    pred_boxes, hits = [], []
    for s in range(0, len(imageset), batch_size):
        idx = slice(s, s + batch_size)
        x = imageset.float(idx, device)
        if target == "label":
            t = imageset.labels[idx].to(device)
        elif target == "predicted":
            with torch.no_grad():
                t = model(x).argmax(1)
        else:
            raise UserError(f"target: expected 'label' or 'predicted', got {target!r}")
        maps = saliency(model, x, t, method, **method_opts).detach().cpu()
        pred_boxes.append(saliency_boxes(maps, fraction, mode, component))
        masks = None if imageset.masks is None else imageset.masks[idx]
        hits.append(pointing_game(maps, masks=masks, boxes=imageset.boxes[idx]))
    boxes = torch.cat(pred_boxes)
    iou = box_iou(boxes, imageset.boxes)
    return {
        "method": method,
        "n": len(imageset),
        "box_accuracy": float((iou >= 0.5).double().mean()),
        "mean_iou": float(iou.mean()),
        "pointing_accuracy": float(np.concatenate(hits).mean()),
        "threshold": {"fraction": fraction, "mode": mode, "component": component},
        "tolerance_px": tolerance_pixels(*imageset.resolution),
    }


def center_box_baseline(imageset: Any, fraction: float = 0.5) -> float:
    """Box accuracy of a centred box covering ``fraction`` of the area (a reference floor)."""
    h, w = imageset.resolution
    s = float(np.sqrt(fraction))
    bw, bh = w * s, h * s
    box = torch.tensor([(w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2]).expand(len(imageset), 4)
    return box_accuracy(box, imageset.boxes)


__all__: Sequence[str] = [
    "box_accuracy",
    "box_iou",
    "center_box_baseline",
    "evaluate_localization",
    "keep_mask",
    "pointing_game",
    "saliency_box",
    "saliency_boxes",
    "tolerance_pixels",
]
