"""The ``sanity`` stage: cascading parameter randomisation (Adebayo et al. 2018; main paper
App. A) on random, STD and ADV models, through :func:`robustlens.explain.sanity.sanity_curves`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from robustlens.study.result import StageResult
from robustlens.study.runner import StageContext
from robustlens.study.spec import Spec
from robustlens.study.stages.context import analysis_deps, stage_seed
from robustlens.study.stages.saliency import images_and_models, method_opts

NAME = "sanity"


def params(spec: Spec) -> dict:
    return {**dataclasses.asdict(spec.stages.sanity), "seed": spec.seed}


def deps(spec: Spec) -> tuple[str, ...]:
    return analysis_deps(spec)


def run(ctx: StageContext) -> StageResult:
    """Cascading parameter randomisation (Adebayo et al. 2018; main App. A) on random, STD and
    ADV models: similarity of each map to the original as layers are randomised top down."""
    from robustlens.explain.sanity import sanity_curves

    p = ctx.params
    sub, x, y, models = images_and_models(ctx)
    orders = ["top_down"] + (["independent"] if p["independent"] else [])
    curves: dict[str, dict] = {}
    figures, captions = {}, {}
    for order in orders:
        for method in p["methods"]:
            opts = method_opts(method, {}, stage_seed(ctx, "sanity"))
            opts.pop("generator", None)
            raw = sanity_curves(models, x, y, methods=[method], order=order, seed=stage_seed(ctx, "sanity"), progress=True, **opts)
            for n, per in raw.items():
                for meth, r in per.items():
                    key = meth if order == "top_down" else f"{meth} ({order})"
                    curves.setdefault(n, {})[key] = {"layers": list(r["layers"]),
                                                     **{m: list(v["mean"]) for m, v in r["metrics"].items()}}
        shown = {n: {k: v for k, v in per.items() if (order == "top_down") == ("(" not in k)} for n, per in curves.items()}
        figures[f"curves_{order}"] = _plot_sanity(shown, ctx.out / f"sanity_{order}.png")
        captions[f"curves_{order}"] = (f"{order.replace('_', '-')} randomisation: similarity of the map to the original "
                                       "after each layer is randomised (left: first = original).")
    summary = ("Similarity between the saliency map of the trained model and that of the model with its layers "
               "randomised one after another (Spearman rank correlation of |map| and of the signed map, SSIM, HOG); "
               "1 = unchanged, 0 = unrelated. A method that passes the check loses similarity as layers are randomised.")
    return StageResult({"n": len(sub), "methods": p["methods"], "orders": orders, "curves": curves}, figures=figures,
                       summary=summary, captions=captions, order=("notes", "tables", "figures", "summary", "captions"))


def _plot_sanity(curves: dict, path: Path) -> str:
    """One panel per similarity metric, one line per model and method."""
    from robustlens.plot import pyplot, save_figure

    plt = pyplot()
    metrics = [k for k in ("spearman_abs", "spearman", "ssim", "hog") if any(k in c for per in curves.values() for c in per.values())]
    metrics = metrics or ["spearman_abs"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.3), squeeze=False)
    for ax, met in zip(axes[0], metrics):
        for n, per in curves.items():
            for method, c in per.items():
                if met in c:
                    ax.plot(range(len(c[met])), c[met], marker="o", label=f"{n} / {method}")
                    if c.get("layers"):
                        ax.set_xticks(range(len(c["layers"])), [str(v)[-12:] for v in c["layers"]], rotation=60, fontsize=6)
        ax.set(title=met, xlabel="layers randomised (top down)", ylim=(-0.1, 1.05))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return save_figure(fig, path, dpi=100, tight_layout=True).name
