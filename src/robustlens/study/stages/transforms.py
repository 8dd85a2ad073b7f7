"""The ``transforms`` stage: top-1 accuracy under blur, median, reversal, greyscale,
stylisation, silhouettes and edges (main paper Sec. 4.1; Chen et al. 2020), through
:func:`robustlens.probes.evaluate.evaluate_probes`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from robustlens.study.result import StageResult
from robustlens.study.runner import StageContext
from robustlens.study.spec import Spec
from robustlens.study.stages.context import analysed, analysis_deps, device, eval_subset, load_data, stage_seed

NAME = "transforms"


def params(spec: Spec) -> dict:
    return dataclasses.asdict(spec.stages.transforms)


def deps(spec: Spec) -> tuple[str, ...]:
    return analysis_deps(spec)


def run(ctx: StageContext) -> StageResult:
    """Accuracy under blur, median, reversal, stylisation, silhouettes, edges (Sec. 4.1; Chen et al.)."""
    from robustlens.probes.evaluate import evaluate_probes, plot_curves

    p = ctx.params
    seed = stage_seed(ctx, "transforms")
    sub = eval_subset(ctx.shared, p["n"])
    probes, skipped = _probes(p, has_masks=sub.masks is not None, channels=sub.channels)
    models = analysed(ctx)
    pool = load_data(ctx.shared)["train"].sample(512, seed=seed)
    rows = evaluate_probes(models, sub, probes, batch_size=p["batch_size"], device=device(ctx),
                           style_pool=pool.images, pool_labels=pool.labels, seed=seed)
    out = {name: _model_entry([r for r in rows if r["model"] == name]) for name in models}
    plot_curves(rows, ctx.out / "curves.png")
    figures = {"curves": "curves.png", "examples": _probe_examples(sub, probes, pool, ctx.out / "examples.png", seed)}
    numbers = {"n": len(sub), "blur_kernel": p["blur_kernel"], "median_kernel": p["median_kernel"], "models": out,
               "skipped": skipped, "rows": rows, "shape_background": _background(sub)}
    summary = (f"Top-1 accuracy on {len(sub)} test images under each transformation (Gaussian blur kernel {p['blur_kernel']}, "
               f"median kernel {p['median_kernel']} applied 0..{p['median_repeats']} times)."
               + (f" Skipped: {', '.join(skipped)}." if skipped else ""))
    captions = {"curves": "Accuracy against blur sigma and median repeats; bars: reversal, stylisation, silhouettes, edges "
                          "(*_light: drawn white on black).",
                "examples": "One test image under each transformation."}
    notes = [f"Skipped {s}." for s in skipped] or None
    return StageResult(numbers, notes=notes, summary=summary, tables=_tables(out, probes), figures=figures, captions=captions)


def _probes(p: dict, *, has_masks: bool, channels: int = 3) -> tuple[list, list[str]]:
    """The probes the spec enables, and the ones skipped (with why: no masks, or greyscale on
    data that is already greyscale, :meth:`Probe.skip_reason`)."""
    from robustlens.probes.transforms import get_probe

    probes = [
        get_probe("blur").with_params(levels=p["blur_sigmas"], kernel_size=p["blur_kernel"]),
        get_probe("median").with_params(levels=list(range(0, p["median_repeats"] + 1)), kernel_size=p["median_kernel"]),
    ]
    skipped = []
    for flag, pname in (("reversal", "invert"), ("greyscale", "greyscale"), ("stylise", "stylize")):
        if p[flag]:
            why = get_probe(pname).skip_reason(channels)
            if why:
                skipped.append(f"{pname} ({why})")
            else:
                probes.append(get_probe(pname))
    for flag, pname in (("silhouettes", "silhouette"), ("edges", "edges")):
        if p[flag]:
            if not has_masks and pname == "silhouette":
                skipped.append(f"{pname} (the data has no masks)")
                continue
            for pol in p.get("shape_polarity", ["dark"]):
                probe = get_probe(pname).with_params(polarity=pol)
                probes.append(probe if pol == "dark" else dataclasses.replace(probe, name=f"{pname}_light"))
    return probes, skipped


def _background(sub) -> dict | None:
    """The data's own background decides which silhouette polarity is "in distribution"."""
    if sub.masks is None:
        return None
    k = min(256, len(sub))
    xs, ms = sub.float(slice(0, k)), sub.masks[:k]
    bg = float(xs.mean(1)[~ms].mean()) if (~ms).any() else 1.0
    return {"mean_intensity": bg, "matched_polarity": "light" if bg < 0.5 else "dark"}


def _model_entry(mine: list[dict]) -> dict[str, Any]:
    """One model's rows as ``{clean, <probe>: top1, <curve probe>: {level_name, levels, accuracy}}``."""
    entry: dict[str, Any] = {}
    for r in mine:
        if r["probe"] == "clean":
            entry["clean"] = r["top1"]
        elif r["level"] is None:
            entry[r["probe"]] = r["top1"]
        else:
            c = entry.setdefault(r["probe"], {"level_name": r["level_name"], "levels": [], "accuracy": []})
            c["levels"].append(r["level"])
            c["accuracy"].append(r["top1"])
    return entry


def _tables(out: dict, probes: list) -> dict:
    single = [pr.name for pr in probes if pr.level_name is None]
    tables = {"single-level transformations (top-1)": {
        "header": ["model", "clean"] + single, "rows": [[n, out[n].get("clean")] + [out[n].get(s) for s in single] for n in out]}}
    first = out[next(iter(out))]
    for pname in ("blur", "median"):
        tables[f"{pname} ({first[pname]['level_name']})"] = {
            "header": ["model"] + [str(v) for v in first[pname]["levels"]], "rows": [[n] + out[n][pname]["accuracy"] for n in out]}
    return tables


def _probe_examples(sub, probes, pool, path: Path, seed: int) -> str:
    import torch

    from robustlens.explain.render import image_grid
    from robustlens.probes.transforms import ProbeContext

    x = sub.float(slice(0, 1))
    ims, labels = [x[0]], ["clean"]
    for pr in probes:
        levels = pr.levels if pr.level_name is not None else (None,)
        if pr.level_name is not None and len(levels) > 3:
            levels = (levels[len(levels) // 2], levels[-1])
        for lv in levels:
            c = ProbeContext(masks=None if sub.masks is None else sub.masks[:1], labels=sub.labels[:1],
                             style_pool=pool.images, pool_labels=pool.labels, generator=torch.Generator().manual_seed(seed))
            ims.append(pr.apply(x, lv, c)[0].clamp(0, 1))
            labels.append(pr.name if lv is None else f"{pr.name} {lv}")
    return image_grid(torch.stack(ims), path, ncol=min(8, len(ims)), labels=labels).name
