"""The ``saliency`` stage: saliency grids, methods x models (STD, ADV, a random model; main
paper Fig. 2 and App. A) through :func:`robustlens.explain.saliency.saliency`, and the share
of each map on the object (:func:`robustlens.explain.localize.object_energy`).

Also the two helpers the ``sanity`` stage shares: the random baseline model and each
method's options."""

from __future__ import annotations

import dataclasses
from typing import Any

from robustlens.progress import Progress
from robustlens.study.result import StageResult
from robustlens.study.runner import StageContext
from robustlens.study.spec import Spec
from robustlens.study.stages.context import analysed, analysis_deps, device, eval_subset, load_model, stage_seed

NAME = "saliency"


def params(spec: Spec) -> dict:
    return {**dataclasses.asdict(spec.stages.saliency), "seed": spec.seed}


def deps(spec: Spec) -> tuple[str, ...]:
    return analysis_deps(spec)


def random_model(ctx: StageContext, like: str = "std"):
    """A randomly initialised model of the STD model's architecture (the main paper's App. A baseline)."""
    import torch

    from robustlens.layout import fast_layout
    from robustlens.models import create

    ref = load_model(ctx, like)
    torch.manual_seed(stage_seed(ctx, "saliency"))
    kwargs = {}
    if ref.arch == "small_cnn":
        kwargs = {"width": ref.first_conv.out_channels, "in_channels": ref.first_conv.in_channels}
    m = create(ref.arch, num_classes=ref.num_classes, **kwargs)
    m.normalize.set(ref.normalize.mean.flatten().tolist(), ref.normalize.std.flatten().tolist())
    return fast_layout(m.to(device(ctx)), device(ctx)).eval()  # the study's own model (robustlens.layout)


def images_and_models(ctx: StageContext):
    """``(sub, x, y, models)``: the stage's ``n`` evaluation images on the device and the analysed
    models, plus the random baseline when ``random_model`` (the saliency, sanity and
    faithfulness stages all explain these)."""
    p = ctx.params
    sub = eval_subset(ctx.shared, p["n"])
    dev = device(ctx)
    x, y = sub.float(device=dev), sub.labels.to(dev)
    models = analysed(ctx)
    if p.get("random_model", True):
        models["random"] = random_model(ctx)
    return sub, x, y, models


def method_opts(method: str, p: dict, seed: int) -> dict:
    """The saliency options a method takes from the stage's parameters (SmoothGrad's
    generator seeded with ``seed``)."""
    import torch

    if method == "smoothgrad":
        return {"n_samples": p.get("smoothgrad_samples", 50), "noise_level": p.get("smoothgrad_sigma", 0.2),
                "generator": torch.Generator().manual_seed(seed)}
    if method in ("ig", "ig_path_average"):
        return {"steps": p.get("ig_steps", 50)}
    return {}


def run(ctx: StageContext) -> StageResult:
    """Saliency grids, methods x models (STD, ADV, random), main paper Fig. 2 and App. A."""
    from robustlens.explain.saliency import saliency

    p = ctx.params
    sub, x, y, models = images_and_models(ctx)
    maps: dict[str, dict[str, Any]] = {}
    with Progress("saliency", len(models) * len(p["methods"]), unit="map") as bar:
        for mi, (n, m) in enumerate(models.items()):
            for method in p["methods"]:
                opts = method_opts(method, p, stage_seed(ctx, "saliency") + mi)
                maps.setdefault(method, {})[n] = saliency(m, x, y, method=method, **opts).detach().cpu()
                bar.update(1, step=f"{n} {method}")
    figures, captions = _grids(ctx, sub, x, maps, list(models))
    left_out = _left_out(x, sub.masks, maps)
    energy = _energy({m: v for m, v in maps.items() if m not in left_out}, sub.masks)
    shown = [mm for mm in p["methods"] if mm not in left_out]
    rows = [[n] + [energy[n].get(mm) for mm in shown] for n in energy]
    summary = ("Share of each map's |saliency| that falls inside the object's mask (higher: the map follows the object, "
               "not the background or fine texture)." if energy else "The data has no masks: object energy not measured.")
    tables = {"share of |saliency| on the object": {"header": ["model"] + shown, "rows": rows}} if rows else None
    return StageResult({"n": len(sub), "methods": p["methods"], "models": list(models), "object_energy": energy,
                        "object_energy_left_out": left_out},
                       notes=list(left_out.values()), summary=summary, figures=figures, captions=captions, tables=tables,
                       order=("notes", "summary", "figures", "captions", "tables"))


def _left_out(x, masks, maps: dict) -> dict[str, str]:
    """Methods whose share on the object is 1 by construction, not by the model: a map that is
    exactly zero off the object for every model, the random one included. Integrated
    gradients, input x gradient, DeepLIFT and gradient SHAP multiply by (x - x'), so with the
    black baseline x' = 0 they vanish wherever the background is black (the procedural set).
    Such a method is left out of the object share (and of its claim) rather than reported as 1.0."""
    if masks is None:
        return {}
    outside = ~masks.to(x.device).unsqueeze(1).expand_as(x).cpu()
    out = {}
    for method, per in maps.items():
        if per and all(float(v.abs()[outside].sum()) == 0.0 for v in per.values()):
            out[method] = (f"{method} is left out of the object share: its map is exactly zero off the object for every "
                           f"model ({', '.join(per)}), so its share is 1.0 by construction (a black baseline equal to the "
                           "black background), not by what the model looks at.")
    return out


def _energy(maps: dict, masks) -> dict[str, dict[str, float]]:
    """``{model: {method: mean share of |map| inside the object mask}}`` (empty without masks)."""
    from robustlens.explain.localize import object_energy

    energy: dict[str, dict[str, float]] = {}
    if masks is not None:
        for method, per in maps.items():
            for n, v in per.items():
                e = object_energy(v, masks)
                energy.setdefault(n, {})[method] = sum(e) / len(e)
    return energy


def _grids(ctx: StageContext, sub, x, maps: dict, names: list[str]) -> tuple[dict, dict]:
    """One grid of every method and model on the first images, and one grid per method."""
    from robustlens.explain.render import saliency_grid

    labels = [sub.classes[int(c)] for c in sub.labels]
    k = min(4, len(sub))
    saliency_grid(x[:k].cpu(), {f"{method}\n{n}": v[:k] for method, per in maps.items() for n, v in per.items()},
                  ctx.out / "grid_all.png", mode="signed", row_labels=labels[:k], cell=1.1,
                  title="all methods: " + ", ".join(f"{n}" for n in names) + " side by side")
    figures = {"grid_all": "grid_all.png"}
    captions = {"grid_all": "Every method (column groups) for every model on the same test images (main paper Fig. 2 layout)."}
    for method, per in maps.items():
        f = f"grid_{method}.png"
        saliency_grid(x.cpu(), {f"{method} / {n}": v for n, v in per.items()}, ctx.out / f, mode="signed", row_labels=labels,
                      title=f"{method}: " + " vs ".join(per))
        figures[f"grid_{method}"] = f
        captions[f"grid_{method}"] = f"{method}: rows = test images, columns = models (display clipped at 3 std)."
    return figures, captions
