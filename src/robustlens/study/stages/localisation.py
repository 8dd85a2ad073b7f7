"""The ``localisation`` stage: weak localisation from saliency, box accuracy (IoU >= 0.5) and
the pointing game (Aggarwal et al.), through :func:`robustlens.explain.localize.evaluate_localization`."""

from __future__ import annotations

import dataclasses

from robustlens.study.result import StageResult
from robustlens.study.runner import NotMeasured, StageContext
from robustlens.study.spec import Spec
from robustlens.study.stages.context import analysis_deps, analysis_models, device, eval_subset, load_model, spec_of

NAME = "localisation"


def params(spec: Spec) -> dict:
    return dataclasses.asdict(spec.stages.localisation)


def deps(spec: Spec) -> tuple[str, ...]:
    return analysis_deps(spec)


#: the two thresholds reported (explain.localize.keep_mask): the smallest set of pixels holding
#: half the map's energy, and CAM / Grad-CAM's pixels >= 15 % of the maximum
THRESHOLDS = {"energy": {"mode": "energy", "fraction": 0.5}, "max": {"mode": "max", "fraction": 0.15}}


def run(ctx: StageContext) -> StageResult:
    """Weak localisation from saliency (Aggarwal et al.: "low-perturbation adversarial training
    improves zero-shot and localization performance"): box accuracy (IoU >= 0.5) with the
    energy and the max threshold, the pointing game, and a centred box as the floor a map must
    beat (a constant or degenerate map gives about that box)."""
    from robustlens.explain.localize import center_box_baseline, evaluate_localization

    p = ctx.params
    sub = eval_subset(ctx.shared, p["n"])
    if sub.boxes is None:
        raise NotMeasured("localisation needs ground-truth boxes (the procedural set has them)")
    out = {}
    for n in analysis_models(spec_of(ctx)):
        model = load_model(ctx, n)
        per = {}
        for key, th in THRESHOLDS.items():
            r = evaluate_localization(model, sub, method=p["method"], device=device(ctx), **th)
            per[key] = {k: v for k, v in r.items() if isinstance(v, (int, float, str, list, dict))}
        out[n] = {**per["energy"], "max_threshold": per["max"]}
    centre = center_box_baseline(sub)
    rows = [[n, o["box_accuracy"], o["max_threshold"]["box_accuracy"], o["mean_iou"], o["pointing_accuracy"]] for n, o in out.items()]
    rows.append(["centred box (half the area)", centre, centre, None, None])
    tables = {"localisation": {"header": ["model", "IoU>=0.5, energy 50 %", "IoU>=0.5, max 15 %", "mean IoU (energy)",
                                           "pointing game"], "rows": rows}}
    summary = (f"Boxes around the {p['method']} map's salient pixels (largest 8-connected component): the smallest set "
               "holding half the map's energy, and the pixels >= 15 % of its maximum (CAM / Grad-CAM's rule).")
    return StageResult({"n": len(sub), "method": p["method"], "models": out, "centre_box_accuracy": centre},
                       figures={}, tables=tables, summary=summary)
