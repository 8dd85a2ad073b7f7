"""The ``construct`` stage: robust and non-robust data sets (Ilyas et al. 2019, Sec. 3)
through :mod:`robustlens.transfer.construct`.

D_R inverts the ADV model's representation; D_det / D_rand are made by targeted L2 PGD on
the STD model and relabelled with the target. A fresh standard model trained on each (and,
with ``baseline``, on the original images) is evaluated on the original test set, clean and
under PGD at the study's threat.

Resumable: construction chunks and each finished training / evaluation are kept in the
stage's work folder (everything is seeded, so a resumed stage gives the same numbers).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from typing import Any

from robustlens.study.result import StageResult
from robustlens.study.runner import StageContext
from robustlens.study.spec import Spec
from robustlens.study.stages.context import device, load_data, load_model, stage_seed, strip_seconds, threat_params

NAME = "construct"
KIND_NAMES = {"original": "D (original images)", "robust": "D_R (robust)", "det": "D_det (y+1)", "rand": "D_rand (random target)"}


def params(spec: Spec) -> dict:
    return {**dataclasses.asdict(spec.stages.construct), "seed": spec.seed, "threat": threat_params(spec)}


def deps(spec: Spec) -> tuple[str, ...]:
    return ("data", "train_std", "train_adv")


def run(ctx: StageContext) -> StageResult:
    """Construct each set, train and evaluate a fresh model on it, keep the sets and models."""
    from robustlens.data.base import sample_indices

    p = ctx.params
    seed = stage_seed(ctx, "construct")
    data = load_data(ctx.shared)
    train, test = data["train"], data["test"]
    n = min(p["n"] or len(train), len(train))
    test_eval = test.sample(p["eval_n"] or len(test), seed=seed)
    std, adv = load_model(ctx, "std"), load_model(ctx, "adv")
    fresh = _fresh_recipe(p, std, seed)
    ctx.work.mkdir(parents=True, exist_ok=True)
    kinds = (["original"] if p["baseline"] else []) + list(p["datasets"])
    chosen = sample_indices(len(train), n, seed, sort=True)  # the images construct_dataset uses
    x_orig = train.float(chosen)
    datasets: dict[str, dict] = {}
    samples: dict[str, Any] = {}
    for kind in kinds:
        cset, construction = _construct(ctx, kind, train, chosen, x_orig, source=adv if kind == "robust" else std, n=n)
        samples[kind] = cset.images[:8]
        datasets[kind] = {**_evaluate(ctx, kind, cset, test_eval, fresh, classes=list(train.classes)), "construction": construction}
    models = _keep_models(ctx, kinds)
    kept = _keep_datasets(ctx) if p.get("keep_datasets", True) else {}
    chance = 1.0 / max(1, train.num_classes)
    figures = _figures(ctx, datasets, samples, x_orig[:8], chance)
    numbers = {
        "n": n, "eval_n": len(test_eval), "chance": chance, "threat": p["threat"], "attack_steps": p["attack_steps"],
        "files": kept,  # constructed sets kept in the stage folder (float32 data.npz + construct.json)
        "models": models,  # the fresh models, as checkpoints in the stage folder
        "settings": _settings(p), "train": fresh, "datasets": datasets,
    }
    threat, eps_txt = p["threat"], _eps_text(p["threat"])
    captions = {"accuracy": f"Fresh standard models trained on each set, evaluated on the original test set: clean and PGD-{p['attack_steps']} "
                            f"({threat['norm']} eps {eps_txt}); dashed: chance.",
                "samples": "Original training images (top) and what each construction made of them."}
    return StageResult(numbers, figures=figures, captions=captions, summary=_summary(p, n, fresh["arch"], len(test_eval), chance),
                       tables={"fresh models on the original test set": _table(p, datasets)},
                       order=("notes", "figures", "captions", "summary", "tables"))


def _fresh_recipe(p: dict, std, seed: int) -> dict:
    """How the fresh models are trained: ``stages.construct.arch`` or the STD model's architecture."""
    if p["arch"]:
        arch, arch_options = p["arch"], dict(p["arch_options"])
    else:
        arch = std.arch
        arch_options = {k: v for k, v in (std.config or {}).items() if k != "num_classes"}
        arch_options.update(p["arch_options"])
    return {"arch": arch, "arch_options": arch_options, "epochs": p["epochs"], "lr": p["lr"], "batch_size": p["batch_size"],
            "augment": bool(p.get("augment", False)), "seed": seed}


def _construct(ctx: StageContext, kind: str, train, chosen, x_orig, *, source, n: int) -> tuple[Any, dict]:
    """The constructed set of ``kind`` (the original images for ``original``) and its statistics."""
    from robustlens.transfer.construct import ConstructedSet, construct_dataset, construction_stats

    p = ctx.params
    if kind == "original":
        return ConstructedSet.originals(train, chosen), {}
    kw: dict[str, Any] = dict(n=n, chunk_size=p["chunk_size"], seed=stage_seed(ctx, "construct"), device=device(ctx), show_progress=True)
    if kind == "robust":
        kw.update(steps=p["robust_steps"], step_size=p["robust_step_size"], init=p["robust_init"])
    else:
        kw.update(steps=p["steps"], step_size=p["step_size"], eps=p["eps"])
    ctx.log(f"constructing {KIND_NAMES[kind]} from {n} images")
    cset = construct_dataset(source, train, kind, out_dir=ctx.work / kind, **kw)
    return cset, construction_stats(kind, source, cset, x_orig, device=device(ctx))


def _evaluate(ctx: StageContext, kind: str, cset, test_eval, fresh: dict, *, classes: list[str]) -> dict:
    """Train a fresh model on ``cset`` and evaluate it (cached in the work folder, model kept there)."""
    from robustlens.io import write_json_atomic
    from robustlens.models.checkpoint import save_checkpoint
    from robustlens.transfer.construct import train_and_evaluate

    p = ctx.params
    cache = ctx.work / f"eval_{kind}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    ctx.log(f"training a fresh {fresh['arch']} on {KIND_NAMES[kind]} ({p['epochs']} epochs) and evaluating it")
    r = train_and_evaluate(cset, test_eval, arch=fresh["arch"], model_kwargs=fresh["arch_options"], epochs=p["epochs"], lr=p["lr"],
                           batch_size=p["batch_size"], augment=fresh["augment"], threat_norm=p["threat"]["norm"],
                           threat_eps=p["threat"]["eps"], attack_steps=p["attack_steps"], extra_threats=p.get("eval_threats", []),
                           seed=fresh["seed"], device=device(ctx), show_progress=True)
    ev = strip_seconds({
        "clean_accuracy": r["test_clean_accuracy"], "robust_accuracy": r["test_robust_accuracy"],
        "extra_threats": r["extra_threats"],
        "train_accuracy_constructed_labels": r["train_accuracy_constructed_labels"],
        "train_agreement_with_original_labels": r["train_agreement_with_original_labels"],
        "n_train": r["n_train"], "n_test": r["n_test"], "attack": r["attack"], "last_epoch": r["last_epoch"],
    })
    # the fresh model is kept, so it can be attacked further (robustlens attack --checkpoint)
    save_checkpoint(ctx.work / f"model_{kind}.safetensors", r["model"], {"classes": classes, "trained_on": KIND_NAMES[kind], "construct": ev})
    write_json_atomic(cache, ev)
    return ev


def _keep_models(ctx: StageContext, kinds: list[str]) -> dict[str, str]:
    """Move the fresh models from the work folder into ``models/`` of the stage folder."""
    models = {}
    for kind in kinds:
        src = ctx.work / f"model_{kind}.safetensors"
        if src.exists():
            (ctx.out / "models").mkdir(parents=True, exist_ok=True)
            for f in (src, src.with_suffix(".json")):
                shutil.move(str(f), str(ctx.out / "models" / f.name.removeprefix("model_")))
            models[kind] = f"models/{kind}.safetensors"
    return models


def _keep_datasets(ctx: StageContext) -> dict[str, str]:
    """The constructed sets are the experiment's artefacts: move them out of the work folder
    (deleted once the stage is done) into the stage folder. Read one back with
    ``robustlens.transfer.construct.load_constructed(<stage folder>/datasets/<kind>)``."""
    kept = {}
    for kind in ctx.params["datasets"]:
        src, dst = ctx.work / kind, ctx.out / "datasets" / kind
        if (src / "data.npz").exists():
            dst.mkdir(parents=True, exist_ok=True)
            for f in ("data.npz", "construct.json"):
                shutil.move(str(src / f), str(dst / f))
            kept[kind] = f"datasets/{kind}"
    return kept


def _figures(ctx: StageContext, datasets: dict, samples: dict, originals, chance: float) -> dict[str, str]:
    import torch

    from robustlens.explain.render import image_grid
    from robustlens.transfer.construct import plot_fresh_models

    short = {KIND_NAMES[k].split(" (")[0]: d for k, d in datasets.items()}
    accuracy = plot_fresh_models(short, ctx.out / "construct_accuracy.png", ctx.params["threat"], chance).name
    k = len(originals)
    made = [n for n in samples if n != "original"]
    rows = [originals] + [samples[n][:k].float().clamp(0, 1) for n in made]
    names = ["original"] + made
    labels = [f"{names[r]}" if c == 0 else "" for r in range(len(rows)) for c in range(k)]
    path = ctx.out / "construct_samples.png"
    image_grid(torch.cat(rows), path, ncol=k, labels=labels, title="rows: " + ", ".join(names))
    return {"accuracy": accuracy, "samples": path.name}


def _settings(p: dict) -> dict:
    return {"robust": {"source": "adv", "steps": p["robust_steps"], "step_size": p["robust_step_size"], "init": p["robust_init"]},
            "det": {"source": "std", "eps": p["eps"], "steps": p["steps"], "step_size": p["step_size"]},
            "rand": {"source": "std", "eps": p["eps"], "steps": p["steps"], "step_size": p["step_size"]}}


def _eps_text(threat: dict) -> str:
    return f"{threat['eps'] * 255:.3g}/255" if threat["norm"] == "linf" else f"{threat['eps']:.3g}"


def _table(p: dict, datasets: dict) -> dict:
    extra = list(p.get("eval_threats", []))
    rows = [[KIND_NAMES[k], d["clean_accuracy"], d["robust_accuracy"],
             *[next((e["robust_accuracy"] for e in d.get("extra_threats", []) if e["threat"] == t), None) for t in extra],
             d["train_accuracy_constructed_labels"], d["train_agreement_with_original_labels"]] for k, d in datasets.items()]
    threat = p["threat"]
    header = ["trained on", "clean", f"PGD-{p['attack_steps']} {threat['norm']} {_eps_text(threat)}",
              *[f"PGD-{p['attack_steps']} {t.replace(':', ' ')}" for t in extra], "train acc. (own labels)",
              "train agreement with original labels"]
    return {"header": header, "rows": rows}


def _summary(p: dict, n: int, arch: str, eval_n: int, chance: float) -> str:
    start = "another training image" if p["robust_init"] == "image" else "noise"
    return (f"Ilyas et al. (2019): from {n} training images (a seeded sample), D_R inverts the ADV model's penultimate representation "
            f"({p['robust_steps']} L2 steps of {p['robust_step_size']} from {start}); "
            f"D_det / D_rand perturb towards y+1 / a random class on the STD model (targeted L2 PGD, eps {p['eps']}, {p['steps']} steps) "
            f"and relabel with the target. A fresh {arch} is trained on each ({p['epochs']} epochs) and evaluated on {eval_n} "
            f"original test images; chance = {chance:.3g}.")
