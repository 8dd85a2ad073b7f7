"""The ``featvis`` stage: first-layer filter grids and deeper channels by gradient ascent
(Erhan et al. 2009; main paper Fig. 3-4) through :func:`robustlens.explain.featvis.visualize_channels`,
with each visualisation's high-frequency share (:func:`robustlens.explain.featvis.hf_share`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from robustlens.study.result import StageResult
from robustlens.study.runner import StageContext
from robustlens.study.spec import Spec
from robustlens.study.stages.context import analysed, analysis_deps, load_data

NAME = "featvis"


def params(spec: Spec) -> dict:
    return dataclasses.asdict(spec.stages.featvis)


def deps(spec: Spec) -> tuple[str, ...]:
    return analysis_deps(spec)


def run(ctx: StageContext) -> StageResult:
    """First-layer filter grids and deeper channels by gradient ascent (Erhan et al. 2009; main Fig. 3-4)."""
    models = analysed(ctx)
    figures: dict[str, str] = {}
    captions: dict[str, str] = {}
    notes: list[str] = []
    for n, m in models.items():
        _filters(ctx, n, m, figures, captions, notes)
    channels: dict[str, Any] = {}
    for n, m in models.items():
        channels[n] = _channels(ctx, n, m, figures, captions)
    if load_data(ctx.shared)["train"].channels == 1:
        notes.append("The data is greyscale: channel visualisations are 1-channel images, optimised without "
                     "Lucid's RGB colour decorrelation (identity for 1 channel).")
    return StageResult({"models": list(models), "channels": channels}, notes=notes, figures=figures, captions=captions,
                       summary=" ".join(notes), order=("notes", "figures", "captions", "summary", "tables"))


def _filters(ctx: StageContext, n: str, m, figures: dict, captions: dict, notes: list[str]) -> None:
    """The first-layer filters, each min-max scaled (:func:`robustlens.explain.featvis.first_layer_filters`):
    colour for an RGB model, grey images for any other (a 1-channel model's filters are grey)."""
    from robustlens.explain.featvis import first_layer_filters
    from robustlens.explain.render import image_grid

    # One common scale across models would hide the shapes; per-filter min-max as Lucid does.
    vis = first_layer_filters(m.first_conv)
    c_in = m.first_conv.in_channels
    f = f"filters_{n}.png"
    image_grid(vis, ctx.out / f, ncol=min(16, vis.shape[0]), title=f"{n}: first-layer filters", cell=0.6)
    figures[f"filters_{n}"] = f
    how = "" if c_in == 3 else (" as grey images: the model takes 1 channel" if c_in == 1
                                else f" as grey images: the mean over the model's {c_in} input channels")
    captions[f"filters_{n}"] = f"{n}: first-layer filters (each min-max scaled{how})."
    if c_in != 3:
        notes.append(f"{n}: first-layer filters drawn{how}.")


def _channels(ctx: StageContext, n: str, m, figures: dict, captions: dict) -> dict:
    """Inputs maximising the first channels of each layer (default: the last convolution)."""
    from robustlens.explain.featvis import hf_share, visualize_channels
    from robustlens.explain.render import image_grid
    from robustlens.explain.saliency import find_layer, last_conv_name

    p = ctx.params
    size = load_data(ctx.shared)["train"].resolution[0]
    out = {}
    for layer in p["layers"] or [last_conv_name(m)]:
        mod = find_layer(m, layer)
        width = int(getattr(mod, "out_channels", getattr(mod, "num_features", 8)))  # a torch layer's channel count
        chans = list(range(min(p["channels"], width)))
        imgs = visualize_channels(m, layer, chans, size=size, steps=p["steps"], seed=p["seed"], progress=True)
        f = f"channels_{n}_{layer.replace('.', '_')}.png"
        image_grid(imgs.cpu(), ctx.out / f, ncol=min(8, len(chans)), labels=[str(c) for c in chans],
                   title=f"{n}: {layer}, channels 0..{len(chans) - 1}")
        figures[f"channels_{n}_{layer}"] = f
        captions[f"channels_{n}_{layer}"] = f"{n}: inputs maximising channels of {layer} (gradient ascent, {p['steps']} steps)."
        out[layer] = {"channels": chans, "hf_share": hf_share(imgs)}
    return out


def check_layers(spec: Spec, n_classes: int, channels: int) -> None:
    """Right after the data stage: every name of ``stages.featvis.layers`` is a module of every
    analysed model (built on the meta device: no memory, no training; a checkpoint's model from
    its sidecar)."""
    import torch

    from robustlens.errors import UserError
    from robustlens.explain.saliency import find_layer
    from robustlens.models import create
    from robustlens.study.stages.context import analysis_models

    f = spec.stages.featvis
    if not (f.enabled and f.layers):
        return
    for name in analysis_models(spec):
        arch, kwargs = _arch_of(spec, name, channels)
        with torch.device("meta"):
            model = create(arch, num_classes=n_classes, **kwargs)
        for layer in f.layers:
            try:
                find_layer(model, layer)
            except UserError as e:
                raise UserError(f"stages.featvis.layers: models.{name} ({arch}): {str(e).removeprefix('layer: ')}") from None


def _arch_of(spec: Spec, name: str, channels: int) -> tuple[str, dict]:
    """``(arch, keyword arguments)`` that build model ``name`` as its train stage will."""
    import json
    from pathlib import Path

    m = spec.models[name]
    if m.checkpoint:
        side = json.loads(Path(m.checkpoint).with_suffix(".json").read_text())
        return side["arch"], {k: v for k, v in (side.get("model_kwargs") or {}).items() if k != "num_classes"}
    # as the train stage builds it: every family takes in_channels (non-RGB data on every arch)
    wants = (m.arch == "small_cnn" or channels != 3) and "in_channels" not in m.arch_options
    extra = {"in_channels": channels} if wants else {}
    return m.arch, {**extra, **m.arch_options}
