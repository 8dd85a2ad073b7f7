"""The ``robustness`` stage: clean accuracy, PGD robust accuracy (and against eps) and the
AutoAttack-style ensemble (Croce & Hein 2020), through :func:`robustlens.attacks.evaluate.robust_accuracy`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from robustlens.study.result import StageResult
from robustlens.study.runner import NotMeasured, StageContext
from robustlens.study.spec import Spec
from robustlens.study.stages.context import (analysis_deps, analysis_models, device, eval_subset, load_model, spec_of,
                                             stage_seed, threat_params, tty)

NAME = "robustness"


def params(spec: Spec) -> dict:
    return {**dataclasses.asdict(spec.stages.robustness), "threat": threat_params(spec)}


def deps(spec: Spec) -> tuple[str, ...]:
    return analysis_deps(spec)


def run(ctx: StageContext) -> StageResult:
    """Clean accuracy, PGD robust accuracy and the AutoAttack-style ensemble (Croce & Hein 2020)."""
    p = ctx.params
    sub = eval_subset(ctx.shared, p["n"])
    x, y = sub.float(), sub.labels
    out_models = {name: _measure(ctx, load_model(ctx, name), x, y) for name in analysis_models(spec_of(ctx))}
    figures = {"accuracy": _plot_accuracy(out_models, ctx.out / "accuracy.png", p)}
    if any("eps_curve" in m for m in out_models.values()):
        figures["eps_curve"] = _plot_eps_curve(out_models, ctx.out / "eps_curve.png")
    numbers = {"n": len(x), "autoattack_n": min(p["autoattack_n"], len(x)) if p["autoattack"] else 0,
               "threat": p["threat"], "pgd": {"steps": p["pgd_steps"], "restarts": p["pgd_restarts"]}, "models": out_models}
    return StageResult(numbers, figures=figures,
                       captions={"accuracy": "Clean accuracy, PGD robust accuracy and the ensemble's robust accuracy.",
                                 "eps_curve": "PGD robust accuracy against eps."})


def _measure(ctx: StageContext, model, x, y) -> dict:
    """One model's entry: clean / PGD accuracy, the ensemble on the first images, the eps curve."""
    from robustlens.attacks.evaluate import robust_accuracy
    from robustlens.threat import make_threat

    p = ctx.params
    common = dict(batch_size=p["batch_size"], device=device(ctx), seed=stage_seed(ctx, "robustness"), progress=tty())
    threat = make_threat(p["threat"]["norm"], p["threat"]["eps"])
    r = robust_accuracy(model, (x, y), threat, attack="pgd", steps=p["pgd_steps"], restarts=p["pgd_restarts"], **common)
    entry = {"clean_accuracy": r["clean_accuracy"], "robust_accuracy": r["robust_accuracy"],
             "mean_norm": r.get("mean_norm"), "n": r.get("n", len(x))}
    if p["autoattack"]:
        k = min(p["autoattack_n"], len(x))
        try:
            ra = robust_accuracy(model, (x[:k], y[:k]), threat, attack="autoattack", attacks=p["autoattack_attacks"],
                                 steps=p["autoattack_steps"], n_target_classes=p["autoattack_targets"], **common)
            entry["autoattack"] = {"robust_accuracy": ra["robust_accuracy"], "clean_accuracy": ra["clean_accuracy"],
                                   "per_attack": ra.get("per_attack"), "n": k}
        except NotMeasured as e:
            entry["autoattack"] = {"status": "not_measured", "reason": str(e)}
    curve = []
    for eps in p["eps_grid"]:
        re_ = robust_accuracy(model, (x, y), make_threat(p["threat"]["norm"], eps), attack="pgd", steps=p["pgd_steps"],
                              restarts=1, **common)
        curve.append([float(eps), re_["robust_accuracy"]])
    if curve:
        entry["eps_curve"] = curve
    return entry


def _plot_accuracy(models: dict, path: Path, p: dict) -> str:
    from robustlens.plot import bar_chart

    cats = ["clean", f"PGD-{p['pgd_steps']}"] + (["ensemble"] if p["autoattack"] else [])
    groups = {n: [m["clean_accuracy"], m["robust_accuracy"]]
              + ([m.get("autoattack", {}).get("robust_accuracy", float("nan"))] if p["autoattack"] else []) for n, m in models.items()}
    title = f"{p['threat']['norm']} eps={p['threat']['eps']:.4g} ({p['threat']['eps'] * 255:.3g}/255)"
    return bar_chart(groups, cats, path, figsize=(5.5, 3.2), ylim=(0, 1.08), ylabel="accuracy", title=title, value_labels=True).name


def _plot_eps_curve(models: dict, path: Path) -> str:
    from robustlens.plot import line_chart

    series = {n: m.get("eps_curve") or [] for n, m in models.items()}
    return line_chart(series, path, figsize=(5, 3.2), xlabel="eps", ylabel="PGD accuracy", ylim=(0, 1.02)).name


# the fewest classes each attack's loss is defined for (DLR: eq. 6 uses the 3rd logit; targeted DLR: eq. 7, the 4th)
_MIN_CLASSES = {"apgd-dlr": 3, "apgd-t": 4, "fab-t": 2}


def check_classes(spec: Spec, n_classes: int) -> None:
    """Right after the data stage: every attack of the ensemble is defined for ``n_classes`` classes."""
    from robustlens.errors import UserError

    r = spec.stages.robustness
    if not (r.enabled and r.autoattack):
        return
    for a in r.autoattack_attacks:
        need = _MIN_CLASSES.get(a, 2)
        if n_classes < need:
            raise UserError(f"stages.robustness.autoattack_attacks: {a} needs at least {need} classes and the data has "
                            f"{n_classes}; drop {a!r} from the list or set stages.robustness.autoattack = false")
