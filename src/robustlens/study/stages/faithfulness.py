"""The ``faithfulness`` stage: do the saliency maps tell the truth? Every method x every metric
x STD / ADV / a random model (issue 19): deletion and insertion areas (Samek et al. 2017;
Petsiuk et al. 2018), ROAD (Rong et al. 2022), infidelity (Yeh et al. 2019), max-sensitivity
(Yeh et al. 2019) and the local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018), all from
:mod:`robustlens.explain.faithfulness` and :mod:`robustlens.explain.stability`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from robustlens.study.result import StageResult
from robustlens.study.runner import StageContext
from robustlens.study.spec import Spec
from robustlens.study.stages.context import analysis_deps, stage_seed
from robustlens.study.stages.saliency import images_and_models


NAME = "faithfulness"


def params(spec: Spec) -> dict:
    return {**dataclasses.asdict(spec.stages.faithfulness), "seed": spec.seed}


def deps(spec: Spec) -> tuple[str, ...]:
    return analysis_deps(spec)


def run(ctx: StageContext) -> StageResult:
    """Every method x metric x model (STD, ADV, random) on ``n`` test images; a table, the curves and the numbers of two claims."""
    p = ctx.params
    sub, x, y, models = images_and_models(ctx)
    from robustlens.explain.map_metrics import METRICS, MapMetricSettings, measure

    seed = stage_seed(ctx, NAME)
    settings = MapMetricSettings.of(p)
    results: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    for name, m in models.items():
        for method in p["methods"]:
            numbers, c = measure(m, x, y, method, settings, seed=seed)
            results.setdefault(name, {})[method] = numbers
            curves.setdefault(name, {})[method] = c
            print(f"faithfulness: {name} / {method} done", flush=True)
    rows = [[n, meth] + [round(v[k], 4) for k in METRICS] for n, per in results.items() for meth, v in per.items()]
    tables = {"faithfulness and stability of the maps (means over the images)": {"header": ["model", "method", *METRICS], "rows": rows}}
    figures = {"curves": _plot(curves, p, ctx.out / "faithfulness_curves.png")}
    captions = {"curves": ("Left: deletion curves (target probability as the most relevant pixels are set to the baseline; "
                           "lower is more faithful). Right: ROAD accuracy, most relevant first (solid, lower is more "
                           "faithful) and least relevant first (dashed).")}
    summary = ("Deletion / insertion: area under the target-probability curve (deletion lower, insertion higher = more "
               "faithful). ROAD: accuracy after noisy linear imputation of the most (MoRF) / least (LeRF) relevant pixels; "
               "road_gap = LeRF - MoRF (higher = more faithful). Infidelity: relative, normalised (0 = the map predicts the "
               "effect of noise exactly). Max-sensitivity and Lipschitz: change of the map under uniform noise of radius "
               f"{p['sensitivity_radius']} (lower = more stable).")
    return StageResult({"n": len(sub), "methods": p["methods"], "metrics": list(METRICS), "models": results, "curves": curves},
                       summary=summary, tables=tables, figures=figures, captions=captions,
                       order=("notes", "summary", "tables", "figures", "captions"))


def _plot(curves: dict, p: dict, path: Path) -> str:
    from robustlens.plot import pyplot, save_figure

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [k / p["steps"] for k in range(p["steps"] + 1)]
    for name, per in curves.items():
        for method, c in per.items():
            line, = a1.plot(steps, c["deletion"], label=f"{name} / {method}")
            a2.plot(p["road_fractions"], c["road_morf"], color=line.get_color(), label=f"{name} / {method}")
            a2.plot(p["road_fractions"], c["road_lerf"], color=line.get_color(), linestyle="--")
    a1.set(title="deletion", xlabel="fraction removed", ylabel="target probability")
    a2.set(title="ROAD (solid MoRF, dashed LeRF)", xlabel="fraction removed", ylabel="accuracy", ylim=(-0.05, 1.05))
    for a in (a1, a2):
        a.grid(alpha=0.3)
    a1.legend(fontsize=6)
    return save_figure(fig, path, dpi=100, tight_layout=True).name
