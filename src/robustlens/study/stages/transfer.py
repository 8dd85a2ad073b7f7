"""The ``transfer`` stage: late fusion of STD/ADV backbones (Itazuri et al. 2019, Sec. 4.2,
Fig. 9) through :func:`robustlens.transfer.fusion.run_fusion_study`.

Targets: the study's data set at each of ``sizes`` (:func:`~.context.load_target_splits`).
Each variant concatenates the penultimate features of its backbones (``std+std`` /
``adv+adv``: the first and the second model of that kind, ``params["backbones"]``) into a new
linear head, fine-tuned end to end (``linear_probe = false``, the paper's protocol) or trained
on frozen features. One size at a time; a finished size is kept in the stage's work folder,
so a killed stage resumes at the size it was in.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from robustlens.study.result import StageResult
from robustlens.study.runner import StageContext
from robustlens.study.spec import Spec, transfer_second_models
from robustlens.study.stages.context import device, load_model, load_target_splits, spec_of, stage_seed, strip_seconds

NAME = "transfer"


def backbones(spec: Spec) -> dict[str, list[str]]:
    """``{kind: [first model, second model (for std+std / adv+adv)]}`` for kinds std and adv."""
    seconds = transfer_second_models(spec) if spec.stages.transfer.enabled else {}
    return {kind: [kind] + ([seconds[kind]] if kind in seconds else []) for kind in ("std", "adv")}


def params(spec: Spec) -> dict:
    return {**dataclasses.asdict(spec.stages.transfer), "seed": spec.seed, "backbones": backbones(spec)}


def deps(spec: Spec) -> tuple[str, ...]:
    return ("data", *(f"train_{n}" for names in backbones(spec).values() for n in names))


def run(ctx: StageContext) -> StageResult:
    """Late fusion at each size (resumable per size), its table, pattern and figure."""
    from robustlens.transfer.fusion import paper_pattern, plot_fusion

    p = ctx.params
    mode = "linear" if p["linear_probe"] else "finetune"
    kinds = {k for v in p["variants"] for k in v.split("+")}
    models = {kind: [_trainable(ctx, n) for n in names] for kind, names in p["backbones"].items() if kind in kinds}
    name = _data_name(spec_of(ctx))
    ctx.work.mkdir(parents=True, exist_ok=True)
    parts = [_fuse(ctx, models, size, mode, name) for size in sorted(p["sizes"])]
    config = parts[-1]["config"] if parts else {}
    rows = [r for part in parts for r in part["table"]]
    sizes = sorted(p["sizes"])
    table = {str(s): {r["variant"]: r["mean"] for r in rows if r["resolution"] == s} for s in sizes}
    spread = {str(s): {r["variant"]: r["std"] for r in rows if r["resolution"] == s} for s in sizes}
    pattern = paper_pattern(rows)
    how = "linear probe" if mode == "linear" else "fine-tuning"
    plot_fusion(rows, ctx.out / "fusion.png", title=f"late fusion on {name} ({how}, {config.get('epochs')} epochs, lr {config.get('lr')})")
    numbers = {
        "mode": mode, "epochs": config.get("epochs"), "lr": config.get("lr"), "batch_size": p["batch_size"],
        "repeats": p["repeats"], "seed": stage_seed(ctx, "transfer"), "variants": list(p["variants"]), "sizes": sizes, "dataset": name,
        "backbones": {kind: list(names) for kind, names in p["backbones"].items() if kind in kinds},
        "targets": [{k: v for k, v in part["target"].items() if k != "source"} for part in parts],
        "table": table, "spread": spread, "rows": rows, "runs": [r for part in parts for r in part["runs"]], "pattern": pattern,
    }
    cells = [[v.upper()] + [f"{100 * table[str(s)][v]:.1f} ± {100 * spread[str(s)][v]:.1f}" if v in table[str(s)] else "" for s in sizes]
             for v in p["variants"]]
    tables = {"test accuracy (%), mean ± std over repeats": {"header": ["variant"] + [f"{s}px" for s in sizes], "rows": cells},
              "backbones": {"header": ["backbone", "model", "source", "seed", "own test accuracy"], "rows": _backbone_rows(ctx, kinds)}}
    return StageResult(numbers, figures={"fusion": "fusion.png"}, summary=_summary(p, mode, config, name, sizes, pattern), tables=tables,
                       captions={"fusion": "Test accuracy of each fusion variant on the study's data set at each resolution "
                                           "(mean ± std over repeats), ordered by resolution, as in the main paper's Fig. 9."},
                       order=("notes", "figures", "captions", "summary", "tables"))


def _trainable(ctx: StageContext, name: str):
    """A trainable copy of a study model (the shared copy stays frozen for the other stages)."""
    import copy

    m = copy.deepcopy(load_model(ctx, name))
    for q in m.parameters():
        q.requires_grad_(True)
    return m


def _fuse(ctx: StageContext, models: dict, size: int, mode: str, name: str) -> dict:
    """One size's fusion study ``{config, target, table, runs}``, read back from the work folder when done before."""
    from robustlens.io import write_json_atomic
    from robustlens.transfer.fusion import Target, run_fusion_study

    p = ctx.params
    cache = ctx.work / f"size_{size}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    ctx.log(f"late fusion at {size}px ({mode}, {len(p['variants'])} variants x {p['repeats']} repeat(s))")
    splits = load_target_splits(ctx.shared, size, p["n_train"], p["n_test"], p["target_options"])
    target = Target(name, splits["train"], splits["test"], source=spec_of(ctx).data.source)
    res = run_fusion_study(models, [target], p["variants"], repeats=p["repeats"], mode=mode, epochs=p["epochs"],
                           lr=p["lr"] if p["lr"] > 0 else None, batch_size=p["batch_size"], seed=stage_seed(ctx, "transfer"),
                           device=device(ctx), show_progress=True)
    cfg = {k: v for k, v in res["config"].items() if k not in ("backbones", "targets", "device")}
    part = strip_seconds({"config": cfg, "target": res["config"]["targets"][0], "table": res["table"], "runs": res["runs"]})
    write_json_atomic(cache, part)
    return part


def _backbone_rows(ctx: StageContext, kinds: set[str]) -> list[list]:
    spec = spec_of(ctx)
    rows = []
    for kind, names in ctx.params["backbones"].items():
        if kind not in kinds:
            continue
        for i, n in enumerate(names):
            tr = ctx.deps[f"train_{n}"].result
            seed = tr.get("config", {}).get("seed", spec.models[n].seed if n in spec.models else "")
            rows.append([f"{kind}{i}", n, tr.get("source", ""), seed, tr.get("test_accuracy_1000")])
    return rows


def _summary(p: dict, mode: str, config: dict, name: str, sizes: list[int], pattern: dict) -> str:
    best = ", ".join(f"{k}: {e['best'].upper()}" for k, e in pattern["per_dataset"].items())
    how = "trained on frozen backbones (linear probe)" if mode == "linear" else "fine-tuned end to end"
    return (f"Late fusion (main paper Sec. 4.2): new linear head on the concatenated penultimate features, {how} for "
            f"{config.get('epochs')} epochs at lr {config.get('lr')} (SGD momentum 0.9), {p['repeats']} repeat(s) "
            f"(head initialisation and batch order); targets: {name} at {', '.join(f'{s}px' for s in sizes)}. "
            f"Best variant: {best}.")


def _data_name(spec: Spec) -> str:
    src = spec.data.source
    base = src.split(":", 1)[0] if not Path(src).exists() else src
    return Path(base).name.split(".")[0] or base
