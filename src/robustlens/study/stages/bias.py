"""The ``bias`` stage: shape / texture / colour bias on cue-conflict images (Geirhos et al.
2019, the model-vs-human definition) and its sweep over texture contrast, through
:func:`robustlens.probes.bias.model_bias`.

The table uses ``model_bias``'s batches of 256; the contrast sweep uses batches of 500 (the
batch the stage's former copy of the bias used, kept so its numbers stay those of earlier runs)."""

from __future__ import annotations

import dataclasses

from robustlens.study.result import StageResult
from robustlens.study.runner import NotMeasured, StageContext
from robustlens.study.spec import Spec
from robustlens.study.stages.context import analysed, analysis_deps, device, load_data, spec_of

NAME = "bias"
SWEEP_BATCH = 500


def params(spec: Spec) -> dict:
    return dataclasses.asdict(spec.stages.bias)


def deps(spec: Spec) -> tuple[str, ...]:
    return analysis_deps(spec)


def run(ctx: StageContext) -> StageResult:
    """Shape / texture / colour bias on cue-conflict images (model-vs-human definition:
    shape hits / (shape hits + texture hits) over images whose cues disagree; Geirhos et al.
    2019), and optionally a sweep over texture contrast."""
    from robustlens.probes.bias import model_bias

    data = load_data(ctx.shared)
    if "conflict" not in data or data["conflict"].factors is None:
        raise NotMeasured("cue-conflict bias needs a data set with a cue-conflict split (the procedural set)")
    p = ctx.params
    conflict = data["conflict"].head(min(p["n"], len(data["conflict"])))
    models = analysed(ctx)
    out = {n: model_bias(m, conflict, device=device(ctx)) for n, m in models.items()}
    sweep = _contrast_sweep(ctx, models, len(conflict)) if p["contrast_grid"] else {}
    figures = {"contrast": _plot_sweep(sweep, ctx.out / "contrast_sweep.png")} if p["contrast_grid"] else {}
    figures["bias"] = _plot_bias(out, ctx.out / "bias.png")
    summary = ("Shape bias = shape hits / (shape hits + texture hits) on cue-conflict images whose shape and texture "
               "classes differ; colour bias likewise with colour (images whose colour class differs from the shape).")
    return StageResult({"n": len(conflict), "models": out, "contrast_sweep": sweep}, figures=figures, summary=summary,
                       captions={"bias": "Shape, texture and colour bias.", "contrast": "Shape bias against texture contrast."},
                       order=("notes", "tables", "figures", "summary", "captions"))


def _contrast_sweep(ctx: StageContext, models: dict, n_conflict: int) -> dict[str, list]:
    """``{model: [[contrast, shape_bias], ...]}`` on a conflict split regenerated at each contrast."""
    from robustlens.data import load
    from robustlens.probes.bias import model_bias

    spec = spec_of(ctx)
    sweep: dict[str, list] = {}
    for c in ctx.params["contrast_grid"]:
        opts = {**spec.data.options, "contrast": float(c), "n_conflict": n_conflict}
        cs = load(spec.data.source, split="conflict", size=spec.data.size or None, **opts)
        for n, m in models.items():
            sweep.setdefault(n, []).append([float(c), model_bias(m, cs, batch_size=SWEEP_BATCH, device=device(ctx))["shape_bias"]])
    return sweep


def _plot_bias(out: dict, path) -> str:
    from robustlens.plot import bar_chart

    cats = ["shape_bias", "texture_bias", "colour_bias"]
    groups = {n: [m.get(c) for c in cats] for n, m in out.items()}
    return bar_chart(groups, [c.replace("_", " ") for c in cats], path, title="cue-conflict bias").name


def _plot_sweep(sweep: dict, path) -> str:
    from robustlens.plot import line_chart

    return line_chart(sweep, path, xlabel="texture contrast", ylabel="shape bias", ylim=(0, 1.02)).name
