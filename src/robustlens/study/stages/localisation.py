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


def run(ctx: StageContext) -> StageResult:
    """Weak localisation from saliency: box IoU >= 0.5 accuracy and pointing game (Aggarwal et al.)."""
    from robustlens.explain.localize import evaluate_localization

    p = ctx.params
    sub = eval_subset(ctx.shared, p["n"])
    if sub.boxes is None:
        raise NotMeasured("localisation needs ground-truth boxes (the procedural set has them)")
    out = {}
    for n in analysis_models(spec_of(ctx)):
        r = evaluate_localization(load_model(ctx, n), sub, method=p["method"], device=device(ctx))
        out[n] = {k: v for k, v in r.items() if isinstance(v, (int, float, str, list))}
    return StageResult({"n": len(sub), "method": p["method"], "models": out}, figures={})
