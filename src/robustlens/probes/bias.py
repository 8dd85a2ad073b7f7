"""Cue-conflict bias (Geirhos et al. 2019; the model-vs-human definition) on the procedural set.

The procedural set's ``conflict`` split draws each image's shape, texture and colour
independently (shape and texture always differ there); its label is the shape, and the
factors ``shape``, ``texture``, ``colour`` give every cue's class. For a model trained with
label = shape, a *shape hit* is ``prediction == shape factor``, a *texture hit* is
``prediction == texture factor`` (the class whose texture the image carries; in training,
texture i went with shape i), a *colour hit* is ``prediction == colour factor``.

Definitions (model-vs-human, ``shape_bias = shape hits / (shape hits + texture hits)``):

* ``shape_bias``  = S / (S + T) over images whose shape and texture differ (images whose
  shape and texture agree are left out: a hit on them says nothing about the cue used);
* ``texture_bias`` = T / (S + T) = 1 - shape_bias over the same images;
* ``colour_bias`` = K / (S' + K) over images whose shape and colour differ, with K their colour
  hits and S' their shape hits (the same contrast, shape against colour).

A ratio whose denominator is zero is ``nan`` (``None`` in JSON). Hit rates (over all images
used) and the number of images used are reported too.

The study's bias stage uses :func:`model_bias` for its table (batches of 256) and, for its
contrast sweep, ``model_bias(..., batch_size=500)["shape_bias"]`` (the batch its own copy of
this function used, so the sweep's numbers stay those of earlier runs; a ``nan`` ratio is
written as ``None`` either way).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from robustlens.data.base import ImageSet
from robustlens.errors import UserError
from robustlens.plot import pyplot, save_figure


def _ratio(a: int, b: int) -> float:
    return a / (a + b) if (a + b) > 0 else float("nan")


def cue_conflict_bias(pred: Tensor, shape: Tensor, texture: Tensor, colour: Tensor | None = None) -> dict[str, Any]:
    """Shape, texture and colour bias of predictions ``pred`` (see module docstring)."""
    pred, shape, texture = (torch.as_tensor(t).long().flatten() for t in (pred, shape, texture))
    if not (pred.shape == shape.shape == texture.shape):
        raise UserError(f"bias: predictions ({pred.numel()}), shapes ({shape.numel()}) and textures ({texture.numel()}) differ in length")
    st = shape != texture
    s_hits = int(((pred == shape) & st).sum())
    t_hits = int(((pred == texture) & st).sum())
    n_st = int(st.sum())
    out: dict[str, Any] = {
        "shape_bias": _ratio(s_hits, t_hits),
        "texture_bias": _ratio(t_hits, s_hits),
        "shape_hits": s_hits,
        "texture_hits": t_hits,
        "n_shape_texture": n_st,
        "shape_hit_rate": s_hits / n_st if n_st else float("nan"),
        "texture_hit_rate": t_hits / n_st if n_st else float("nan"),
        "n": int(pred.numel()),
    }
    if colour is not None:
        colour = torch.as_tensor(colour).long().flatten()
        if colour.shape != pred.shape:
            raise UserError(f"bias: colours ({colour.numel()}) and predictions ({pred.numel()}) differ in length")
        sc = shape != colour
        k_hits = int(((pred == colour) & sc).sum())
        s2 = int(((pred == shape) & sc).sum())
        n_sc = int(sc.sum())
        out.update({
            "colour_bias": _ratio(k_hits, s2),
            "colour_hits": k_hits,
            "n_shape_colour": n_sc,
            "colour_hit_rate": k_hits / n_sc if n_sc else float("nan"),
        })
    return out


@torch.no_grad()
def predict(model: nn.Module, data: ImageSet, batch_size: int = 256, device: str | torch.device | None = None) -> Tensor:
    """Arg-max predictions (CPU int64) of ``model`` on every image of ``data``."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    was = model.training
    model.eval().to(dev)
    try:
        out = [model(data.float(slice(s, s + batch_size), dev)).argmax(1).cpu() for s in range(0, len(data), batch_size)]
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def model_bias(model: nn.Module, conflict: ImageSet, batch_size: int = 256, device: str | torch.device | None = None) -> dict[str, Any]:
    """Cue-conflict bias of ``model`` on a conflict split with factors shape / texture (/ colour)."""
    names = tuple(conflict.factor_names or ())
    if conflict.factors is None or "shape" not in names or "texture" not in names:
        raise UserError(
            f"{conflict.name or 'data'}: cue-conflict bias needs factors 'shape' and 'texture' "
            f"(the procedural set's 'conflict' split); this data has {list(names) or 'none'}"
        )
    pred = predict(model, conflict, batch_size, device)
    colour = conflict.factor("colour") if "colour" in names else None
    return cue_conflict_bias(pred, conflict.factor("shape"), conflict.factor("texture"), colour)


def contrast_sweep(
    train_fn: Callable[[str, ImageSet, float], nn.Module],
    contrasts: Sequence[float],
    eps: float = 8 / 255,
    source: str = "trifeature",
    options: Mapping[str, Any] | None = None,
    modes: Sequence[str] = ("std", "adv"),
    batch_size: int = 256,
    device: str | torch.device | None = None,
    loader: Callable[[str, str], ImageSet] | None = None,
) -> list[dict[str, Any]]:
    """Cue-conflict bias against texture contrast, for each training mode.

    For each contrast ``c`` the procedural set is regenerated (``source`` with ``contrast=c`` and
    ``options``), ``train_fn(mode, train_set, eps)`` trains a model for every ``mode`` ("std",
    "adv"; keeping training outside this module lets any loop be used, e.g. one built on
    :func:`robustlens.train.train`), and the bias on the ``conflict`` split is measured.
    Returns rows ``{contrast, mode, eps, shape_bias, texture_bias, colour_bias, ...}``.
    """
    if not contrasts:
        raise UserError("contrast_sweep: expected at least one contrast")
    if loader is None:
        from robustlens.data import load as _load

        loader = lambda src, split: _load(src, split=split)  # noqa: E731
    rows = []
    for c in contrasts:
        c = float(c)
        if not (0.0 <= c <= 1.0) or math.isnan(c):
            raise UserError(f"contrast_sweep: contrast must lie in [0, 1], got {c!r}")
        opts = {**(options or {}), "contrast": c}
        src = source.split(":", 1)[0] + ":" + ",".join(f"{k}={v}" for k, v in opts.items())
        train_set, conflict = loader(src, "train"), loader(src, "conflict")
        for mode in modes:
            model = train_fn(mode, train_set, eps)
            rows.append({"contrast": c, "mode": mode, "eps": eps, **model_bias(model, conflict, batch_size, device)})
    return rows


def plot_sweep(rows: Sequence[dict], path: str | Path) -> Path:
    """Shape bias against texture contrast, one line per mode (PNG)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for mode in dict.fromkeys(r["mode"] for r in rows):
        pts = sorted((r["contrast"], r["shape_bias"]) for r in rows if r["mode"] == mode)
        ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=mode)
    eps = next((r.get("eps") for r in rows), None)
    if eps is not None:
        ax.axvline(float(eps), color="grey", ls="--", lw=1, label=f"eps = {float(eps):.3f}")
    ax.set(xlabel="texture contrast", ylabel="shape bias", ylim=(-0.02, 1.02), title="cue-conflict shape bias")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
