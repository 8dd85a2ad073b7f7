"""The ``neurons`` stage (Chen et al. 2020): smoothness of first-layer filters (total
variation, high-frequency share; plus the main paper's mean |w|) and concept selectivity of
channels, through :mod:`robustlens.probes.neurons`."""

from __future__ import annotations

import dataclasses

from robustlens.study.result import StageResult
from robustlens.study.runner import StageContext
from robustlens.study.spec import Spec
from robustlens.study.stages.context import analysed, analysis_deps, device, eval_subset

NAME = "neurons"


def params(spec: Spec) -> dict:
    return dataclasses.asdict(spec.stages.neurons)


def deps(spec: Spec) -> tuple[str, ...]:
    return analysis_deps(spec)


def run(ctx: StageContext) -> StageResult:
    """Neuron analysis (Chen et al. 2020): smoothness of first-layer filters (total variation,
    high-frequency share; plus the main paper's mean |w|) and concept selectivity of channels
    at ``layers`` on the procedural set's factors (shape / texture / colour): how many concepts
    a channel responds to is the measure of simplicity."""
    from robustlens.probes.neurons import analyse_model, plot_neurons

    p = ctx.params
    models = analysed(ctx)
    sub = eval_subset(ctx.shared, p["n"])
    notes = []
    data_for = sub if sub.factors is not None and sub.factor_names else None
    if data_for is None:
        notes.append("the data has no factor labels: concept selectivity not measured")
    raw = {n: analyse_model(m, data_for, layers=p["layers"] or None, device=device(ctx)) for n, m in models.items()}
    out = {n: _model_entry(models[n], r) for n, r in raw.items()}
    plot_neurons(raw, ctx.out / "neurons.png")
    summary = ("First-layer filters: mean |w| (main paper: ADV's are smaller), share of spectral energy beyond half "
               "the Nyquist frequency and total variation / L1 (Chen et al.: ADV's are smoother); channels: number of "
               "concepts (factor values whose mean activation exceeds the channel's mean + 1 std) and the factor "
               "(eta squared) that explains each channel best." + (" " + " ".join(notes) if notes else ""))
    return StageResult({"n": len(sub), "models": out}, notes=notes, tables=_tables(out, raw), summary=summary,
                       figures={"neurons": "neurons.png"},
                       captions={"neurons": "Filter smoothness, concepts per channel and the factor that explains each channel best."},
                       order=("notes", "tables", "summary", "figures", "captions"))


def _model_entry(model, r: dict) -> dict:
    """First-layer numbers (mean |w| from :func:`first_layer_stats`, smoothness from
    :func:`analyse_model`) and, per layer, the concept summary with its mean over channels."""
    from robustlens.probes.neurons import first_layer_stats

    fl = r["first_layer"]
    stats = first_layer_stats(model)
    entry = {"first_layer_norm": stats["first_layer_norm"], "first_layer_hf": fl.get("hf_share_mean"),
             "first_layer_tv": fl.get("tv_mean"), "filters": stats["filters"], "kernel": stats["kernel"],
             "first_layer_smoothness": fl}
    layers = {}
    tot, cnt = 0.0, 0
    for layer, lr in (r.get("layers") or {}).items():
        summ = lr["summary"]
        layers[layer] = {"summary": summ, "n_concepts": lr["n_concepts"], "best_factor": lr["best_factor"]}
        tot += summ["mean_concepts"] * summ["channels"]
        cnt += summ["channels"]
    if layers:
        entry["layers"] = layers
        entry["concepts_per_channel"] = tot / cnt if cnt else None
    return entry


def _tables(out: dict, raw: dict) -> dict:
    from robustlens.probes.neurons import compare_summary

    rows = [[n, o["first_layer_norm"], o["first_layer_hf"], o["first_layer_tv"], o.get("concepts_per_channel", "not measured")]
            for n, o in out.items()]
    tables = {"first-layer filters and channels": {"header": ["model", "mean |w|", "high-freq share", "TV / L1", "concepts/channel"],
                                                   "rows": rows}}
    per_layer = [[r["model"], r["layer"], r.get("mean_concepts", ""), r.get("share_no_concept", "")]
                 + [r.get(f"best_{f}", "") for f in ("shape", "texture", "colour")] for r in compare_summary(raw) if "mean_concepts" in r]
    if per_layer:
        tables["channels per layer"] = {"header": ["model", "layer", "mean concepts", "share with no concept",
                                                   "best: shape", "best: texture", "best: colour"], "rows": per_layer}
    return tables
