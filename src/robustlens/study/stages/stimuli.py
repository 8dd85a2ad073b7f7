"""The ``stimuli`` stage (opt-in): the real stimulus sets of Geirhos et al. (2019), read from the
user's disk (:mod:`robustlens.data.stimuli`), through a class map onto the models' classes
(:mod:`robustlens.probes.stimuli`: ``"imagenet16"``, model-vs-human's 16-category mean over
ImageNet members, or a table such as CIFAR-10's), with the published shape biases beside the
measured models.

    [stages.stimuli]
    enabled = true
    cue_conflict = "stimuli/cue-conflict"     # <shape>/<shape><i>-<texture><j>.png
    silhouettes = "stimuli/silhouettes"       # <class>/<class><i>.png
    edges = "stimuli/edges"
    class_map = "imagenet16"                  # or { airplane = "airplane", car = "automobile", ... }

Its parameters hold each folder's fingerprint (:func:`robustlens.data.cache.fingerprint`: every
file's path, size and times), so changed stimuli rerun the stage; the folders' layout is
checked when the DAG is built, before any stage runs. The images are resized to ``data.size``
when it is set (Geirhos's are 224 x 224). No random draws.
"""

from __future__ import annotations

from pathlib import Path

from robustlens.study.result import StageResult
from robustlens.study.runner import StageContext
from robustlens.study.spec import Spec
from robustlens.study.stages.context import analysed, analysis_deps, device, load_data

NAME = "stimuli"
KINDS = ("cue_conflict", "silhouettes", "edges")


def params(spec: Spec) -> dict:
    """The stage's options, with each stimulus folder's fingerprint (its layout checked here)."""
    from robustlens.data.cache import fingerprint
    from robustlens.data.stimuli import scan_stimuli

    st = spec.stages.stimuli
    out = {"enabled": st.enabled, "class_map": st.class_map, "batch_size": st.batch_size,
           "size": spec.data.size or None, "sets": {}}
    if st.enabled:
        for kind in KINDS:
            path = getattr(st, kind)
            if path:
                scan_stimuli(path, kind)
                out["sets"][kind] = {"path": path, "files": fingerprint(Path(path))}
    return out


def deps(spec: Spec) -> tuple[str, ...]:
    return analysis_deps(spec)


def run(ctx: StageContext) -> StageResult:
    """Shape bias on the cue-conflict set and accuracy on silhouettes and edges, per model,
    next to the published references (:data:`robustlens.probes.stimuli.REFERENCES`)."""
    from robustlens.data.stimuli import read_stimuli
    from robustlens.probes.stimuli import REFERENCES, class_map, evaluate_stimuli

    p = ctx.params
    classes = list(load_data(ctx.shared)["train"].classes)  # the models' classes (checked against the data)
    cmap = class_map(p["class_map"], classes, "stages.stimuli.class_map")
    sets = {kind: read_stimuli(s["path"], kind, size=p["size"]) for kind, s in p["sets"].items()}
    measured = evaluate_stimuli(analysed(ctx), sets, cmap, p["batch_size"], device(ctx))
    numbers = {
        "class_map": cmap.name, "categories": list(cmap.categories),
        "sets": {k: {"path": s["path"], "images": len(sets[k]), "classes": sets[k].classes} for k, s in p["sets"].items()},
        "models": measured,
        "references": [{"label": r.label, "shape_bias": r.shape_bias, "source": r.source} for r in REFERENCES],
    }
    tables = _tables(measured, REFERENCES)
    figures = {"shape_bias": _plot(measured, REFERENCES, ctx.out / "shape_bias.png")} if "cue_conflict" in sets else {}
    summary = ("Geirhos et al.'s (2019) stimuli. Each model's decision is the category whose member classes have the "
               f"highest mean softmax probability (class map {cmap.name!r}; model-vs-human's 16-class rule). Shape bias = "
               "shape hits / (shape hits + texture hits) over cue-conflict images whose shape and texture differ; "
               "images outside the class map are dropped. Published references are on the full 1,280-image set.")
    return StageResult(numbers, summary=summary, tables=tables, figures=figures,
                       captions={"shape_bias": "Shape bias: measured models and published references."})


def _tables(measured: dict, refs) -> dict:
    out = {}
    if any("cue_conflict" in m for m in measured.values()):
        rows = [[name, m["cue_conflict"]["shape_bias"], m["cue_conflict"]["texture_bias"],
                 m["cue_conflict"]["n_shape_texture"], m["cue_conflict"]["dropped"], "measured"]
                for name, m in measured.items() if "cue_conflict" in m]
        rows += [[r.label, r.shape_bias, round(1 - r.shape_bias, 4), "", "", r.source] for r in refs]
        out["Shape bias on cue-conflict images"] = {
            "header": ["model", "shape bias", "texture bias", "conflict images", "dropped", "source"], "rows": rows}
    shapes = [k for k in ("silhouettes", "edges") if any(k in m for m in measured.values())]
    if shapes:
        rows = [[name] + [v for k in shapes for v in (m[k]["accuracy"], m[k]["n"])] for name, m in measured.items()]
        header = ["model"] + [h for k in shapes for h in (f"{k} accuracy", f"{k} images")]
        out["Accuracy on texture-less images"] = {"header": header, "rows": rows}
    return out


def _plot(measured: dict, refs, path: Path) -> str:
    from robustlens.plot import bar_chart

    groups = {name: [m["cue_conflict"]["shape_bias"]] for name, m in measured.items()}
    groups.update({f"{r.label} (published)": [r.shape_bias] for r in refs})
    return bar_chart(groups, ["shape bias"], path, figsize=(6, 3.2), title="cue-conflict shape bias",
                     value_labels=True).name
