"""The ``data`` stage: load the splits, record their summaries, draw sample grids; for the
procedural set, the world's cues (which one is the class, how often the others agree with it,
their amplitudes in units of eps)."""

from __future__ import annotations

import dataclasses

from robustlens.study.result import StageResult
from robustlens.study.runner import StageContext
from robustlens.study.spec import Spec
from robustlens.study.stages.context import load_data, spec_of

NAME = "data"


def params(spec: Spec) -> dict:
    return {"data": dataclasses.asdict(spec.data), "seed": spec.seed}


def deps(spec: Spec) -> tuple[str, ...]:
    return ()


def run(ctx: StageContext) -> StageResult:
    """Load the splits, record their summaries and draw a grid of training samples."""
    from robustlens.explain.render import image_grid

    data = load_data(ctx.shared)
    train = data["train"]
    spec = spec_of(ctx)
    shown = train.sample(32, seed=spec.seed)
    labels = [train.classes[int(c)] for c in shown.labels]
    image_grid(shown.float(), ctx.out / "samples.png", ncol=8, labels=labels, title="training samples")
    figures = {"samples": "samples.png"}
    captions = {"samples": "Training images (a seeded sample) with their labels."}
    if "conflict" in data and len(data["conflict"]):
        c = data["conflict"].head(min(16, len(data["conflict"])))
        tex = c.factor("texture").tolist() if "texture" in c.factor_names else [None] * len(c)
        lab = [f"{c.classes[int(y)]} / tex {t}" for y, t in zip(c.labels, tex)]
        image_grid(c.float(), ctx.out / "conflict.png", ncol=8, labels=lab, title="cue-conflict images (label / texture class)")
        figures["conflict"] = "conflict.png"
        captions["conflict"] = "Cue-conflict images: the shape of one class filled with the texture of another."
    numbers = {
        "source": spec.data.source,
        "options": spec.data.options,
        "classes": list(train.classes),
        "resolution": list(train.resolution),
        "channels": train.channels,
        "splits": {k: {"images": len(v), "per_class": v.class_counts()} for k, v in data.items()},
        "has_masks": train.masks is not None,
        "has_boxes": train.boxes is not None,
        "factor_names": list(train.factor_names),
    }
    notes = None
    if train.meta.get("source") == "trifeature":
        numbers["world"] = _world(train, spec)
        notes = [numbers["world"]["description"]]
    return StageResult(numbers, figures=figures, captions=captions, notes=notes)


def _world(train, spec: Spec) -> dict:
    """The procedural world in words and numbers: which cue is the class, how often each other
    cue agrees with it (measured on the training split), and each cue's amplitude against the
    study's eps (:func:`robustlens.data.trifeature.cue_table`)."""
    from robustlens._eps import parse_eps
    from robustlens.data.trifeature import TrifeatureConfig, cue_table

    cfg = TrifeatureConfig(**train.meta["options"])
    linf = spec.threat.norm.lower().replace("-", "") in ("linf", "inf")
    eps = parse_eps(spec.threat.eps, name="threat.eps") if linf else None  # amplitudes are L-inf
    return {"description": cfg.describe(eps) + ".", "eps": eps, "cues": cue_table(cfg, train, eps)}
