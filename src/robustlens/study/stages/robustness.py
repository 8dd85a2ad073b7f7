"""The ``robustness`` stage: clean accuracy, PGD robust accuracy (and against eps), the
ensemble (an AutoAttack version or the reduced AutoAttack-style one; Croce & Hein 2020) and the
headline robust accuracy, through :func:`robustlens.attacks.evaluate.robust_accuracy`.

The headline is the strongest evaluation the stage ran: the per-image worst case over PGD and
the ensemble on the same images. As AutoAttack itself does, the ensemble attacks only the
images still robust (here: those PGD left robust), with the randomness per image it would meet
attacking every image, so the headline equals ``pgd_robust & ensemble_robust`` image by image.
Every accuracy comes with its count (k of n) and a Wilson interval; for the STD and ADV models
the 2 x 2 tables of the same images (``paired``) feed the claims' paired intervals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from robustlens.study.result import StageResult
from robustlens.study.runner import NotMeasured, StageContext
from robustlens.study.spec import Spec
from robustlens.study.stages.context import (analysis_deps, analysis_models, device, eval_subset, load_model, spec_of,
                                             stage_seed, threat_params)

NAME = "robustness"


def params(spec: Spec) -> dict:
    return {**dataclasses.asdict(spec.stages.robustness), "threat": threat_params(spec)}


def deps(spec: Spec) -> tuple[str, ...]:
    return analysis_deps(spec)


def run(ctx: StageContext) -> StageResult:
    """Clean accuracy, PGD robust accuracy, the ensemble on the images PGD left robust (Croce &
    Hein 2020) and the headline: the per-image worst case over both, with counts and intervals."""
    p = ctx.params
    sub = eval_subset(ctx.shared, p["n"])
    x, y = sub.float(), sub.labels
    out_models, flags = {}, {}
    for name in analysis_models(spec_of(ctx)):
        out_models[name], flags[name] = _measure(ctx, load_model(ctx, name), x, y)
    figures = {"accuracy": _plot_accuracy(out_models, ctx.out / "accuracy.png", p),
               "eps_curve": _plot_eps_curve(out_models, ctx.out / "eps_curve.png")}
    first = next(iter(out_models.values()))
    numbers = {"n": len(x), "autoattack_n": first["robust_n"] if p["autoattack"] else 0,
               "threat": p["threat"], "pgd": {"steps": p["pgd_steps"], "restarts": p["pgd_restarts"]},
               "headline_attack": first["robust_attack"], "interval": "Wilson score, 95%",
               "models": out_models, "reproduce": _reproduce(ctx, p)}
    if "std" in flags and "adv" in flags:
        numbers["paired"] = {kind: _paired(flags["std"][kind], flags["adv"][kind]) for kind in ("clean", "robust")}
    return StageResult(numbers, figures=figures,
                       captions={"accuracy": f"Clean accuracy, {first['pgd']['label']} robust accuracy and the headline "
                                             f"(worst case per image over {first['robust_attack']}).",
                                 "eps_curve": "PGD robust accuracy against eps (eps 0: clean accuracy; the study's eps marked)."})


def _paired(s: list[bool], a: list[bool]) -> dict:
    """The 2 x 2 table of two models on the same images (Newcombe's paired interval reads it)."""
    n = min(len(s), len(a))
    both = sum(1 for i in range(n) if s[i] and a[i])
    std_only = sum(1 for i in range(n) if s[i] and not a[i])
    adv_only = sum(1 for i in range(n) if a[i] and not s[i])
    return {"both": both, "std_only": std_only, "adv_only": adv_only, "neither": n - both - std_only - adv_only, "n": n}


def _ensemble(p: dict):
    """The ensemble the spec asks for: an AutoAttack version, or the custom (reduced) one."""
    from robustlens.attacks.autoattack import AutoAttack

    if p["autoattack_version"] != "custom":
        return AutoAttack(version=p["autoattack_version"])
    return AutoAttack(version="custom", attacks=tuple(p["autoattack_attacks"]), steps=p["autoattack_steps"],
                      n_target_classes=p["autoattack_targets"])


def _measure(ctx: StageContext, model, x, y) -> tuple[dict, dict]:
    """One model's entry and its per-image flags: clean; PGD on every image; the ensemble on the
    first ``autoattack_n`` images PGD left robust; the headline = the per-image worst case over
    PGD and the ensemble on those images (k of n with a Wilson interval); the eps curve."""
    from robustlens.attacks.evaluate import robust_accuracy
    from robustlens.study.claims import wilson
    from robustlens.threat import make_threat

    p = ctx.params
    common = dict(batch_size=p["batch_size"], device=device(ctx), seed=stage_seed(ctx, "robustness"), progress=True)
    threat = make_threat(p["threat"]["norm"], p["threat"]["eps"])
    r = robust_accuracy(model, (x, y), threat, attack="pgd", steps=p["pgd_steps"], restarts=p["pgd_restarts"], per_example=True, **common)
    n = len(x)
    restarts = p["pgd_restarts"]
    pgd_label = f"PGD-{p['pgd_steps']} ({restarts} restart{'s' if restarts != 1 else ''})"
    n_clean = int(r["clean_flags"].sum())
    entry = {"clean_accuracy": r["clean_accuracy"], "clean_correct": n_clean, "n": n, "clean_interval": list(wilson(n_clean, n)),
             "pgd": {"label": pgd_label, "robust_accuracy": r["robust_accuracy"], "robust": int(r["robust_flags"].sum()), "n": n},
             "pgd_robust_accuracy": r["robust_accuracy"], "mean_norm": r.get("mean_norm")}
    head, label = r["robust_flags"], pgd_label
    if p["autoattack"]:
        m = min(p["autoattack_n"], n)
        ens = _ensemble(p)
        try:
            ra = robust_accuracy(model, (x[:m], y[:m]), threat, attack=ens, still_robust=r["robust_flags"][:m], per_example=True, **common)
        except NotMeasured as e:
            entry["autoattack"] = {"status": "not_measured", "reason": str(e)}
        else:
            head, label = ra["robust_flags"], f"{pgd_label} and {ens.label()}"
            entry["autoattack"] = {"label": ens.label(), "version": ens.version, "n": m, "run_on": f"the images {pgd_label} left robust",
                                   "robust_accuracy": ra["robust_accuracy"],
                                   "per_attack": {pgd_label: float(r["robust_flags"][:m].float().mean()), **ra["per_attack"]}}
    k = int(head.sum())
    entry.update({"robust_accuracy": k / len(head), "robust": k, "robust_n": len(head), "robust_interval": list(wilson(k, len(head))),
                  "robust_attack": f"worst case per image of {label}" if label != pgd_label else pgd_label})
    entry["eps_curve"] = _eps_curve(model, x, y, p, r, common)
    # clean over every image (the clean accuracy's n), robust over the headline's images
    return entry, {"clean": r["clean_flags"].tolist(), "robust": head.tolist()}


def _eps_curve(model, x, y, p: dict, r: dict, common: dict) -> list[list[float]]:
    """PGD robust accuracy at eps 0 (the clean accuracy), at the study's eps (the PGD run above)
    and at every ``eps_grid`` value, in increasing eps."""
    from robustlens.attacks.evaluate import robust_accuracy
    from robustlens.threat import make_threat

    eps0 = float(p["threat"]["eps"])
    points = {0.0: r["clean_accuracy"], eps0: r["robust_accuracy"]}
    for eps in p["eps_grid"]:
        if float(eps) not in points:
            re_ = robust_accuracy(model, (x, y), make_threat(p["threat"]["norm"], eps), attack="pgd", steps=p["pgd_steps"],
                                  restarts=p["pgd_restarts"], **common)
            points[float(eps)] = re_["robust_accuracy"]
    return [[e, points[e]] for e in sorted(points)]


def _reproduce(ctx: StageContext, p: dict) -> str:
    """The command line that reproduces a model's PGD number (same images, same attack seed)."""
    spec = spec_of(ctx)
    opts = ",".join(f"{k}={v}" for k, v in spec.data.options.items())
    data = f"{spec.data.source}:{opts}" if opts and spec.data.source == "trifeature" else spec.data.source
    return (f"robustlens attack --checkpoint runs/{spec.name}/checkpoints/<model>.safetensors --data '{data}' --split test "
            f"--n {p['n']} --seed {int(spec.seed)} --attack-seed {stage_seed(ctx, 'robustness')} --threat {p['threat']['norm']} "
            f"--eps {p['threat']['eps']!r} --attack pgd --steps {p['pgd_steps']} --restarts {p['pgd_restarts']} --batch-size {p['batch_size']}")


def _plot_accuracy(models: dict, path: Path, p: dict) -> str:
    from robustlens.plot import bar_chart

    cats = ["clean", f"PGD-{p['pgd_steps']}"] + (["headline (worst case)"] if p["autoattack"] else [])
    groups = {n: [m["clean_accuracy"], m["pgd"]["robust_accuracy"]] + ([m["robust_accuracy"]] if p["autoattack"] else [])
              for n, m in models.items()}
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

    from robustlens.attacks.autoattack import AutoAttack

    r = spec.stages.robustness
    if not (r.enabled and r.autoattack):
        return
    custom = r.autoattack_version == "custom"
    members = r.autoattack_attacks if custom else [n for n, _ in AutoAttack(version=r.autoattack_version).members()]
    for a in members:
        need = _MIN_CLASSES.get(a, 2)
        if n_classes < need:
            key = "autoattack_attacks" if custom else f"autoattack_version ({r.autoattack_version!r} runs {a})"
            raise UserError(f"stages.robustness.{key}: {a} needs at least {need} classes and the data has "
                            f"{n_classes}; drop {a!r} (autoattack_version = 'custom') or set stages.robustness.autoattack = false")
