"""The ``train_<model>`` stages: train a model of the spec (resumable) or load its checkpoint.

One stage per model of ``[models]`` (helper models only when a stage uses them; see
:mod:`.dag`). Training goes through :func:`robustlens.train.train` with a
:class:`~robustlens.train.TrainConfig` built from the model's spec; the stage's work folder
holds the trainer's resume state, so a killed study resumes mid-training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustlens.errors import UserError
from robustlens.study.result import StageResult
from robustlens.study.runner import StageContext
from robustlens.study.stages.context import accuracy, device, eval_subset, is_time_key, load_data


def run(ctx: StageContext) -> StageResult:
    """Train model ``params["model"]`` (resumable through its work folder) or load its checkpoint."""
    if ctx.params["spec"]["checkpoint"]:
        return _load(ctx)
    return _train(ctx)


def _load(ctx: StageContext) -> StageResult:
    """A model given by ``models.<name>.checkpoint``: its metadata and accuracy."""
    from robustlens.models.checkpoint import load_checkpoint

    p = ctx.params
    name, m = p["model"], p["spec"]
    train_set = load_data(ctx.shared)["train"]
    model, meta = load_checkpoint(m["checkpoint"], device="cpu")
    check_checkpoint_classes(m["checkpoint"], meta, list(train_set.classes), f"models.{name}.checkpoint")
    test = eval_subset(ctx.shared, 1000)
    model.eval()
    training = meta.get("training") or {}
    return StageResult({
        "model": name, "source": "checkpoint", "checkpoint": m["checkpoint"], "sha256": p.get("checkpoint_sha256", ""),
        "arch": meta.get("arch", model.arch), "parameters": sum(t.numel() for t in model.parameters()),
        "eps": training.get("eps", ""), "epochs": training.get("epochs", ""),
        "test_accuracy_1000": accuracy(model, test.float(), test.labels),
    }, figures={})


def train_config(ctx: StageContext):
    """The :class:`~robustlens.train.TrainConfig` of the model's spec (0 / "" = the trainer's default)."""
    return config_of(ctx.params)


def check_batch_sizes(stages: list, shared: dict, device) -> None:
    """Right after the data stage: every trained model's batch size fits its training images
    (the images the per-epoch check holds out excepted), named by its spec key."""
    from robustlens.train.config import data_kind
    from robustlens.train.loop import _split_check

    train_set = load_data(shared)["train"]
    for s in stages:
        if s.fn is not run or s.params["spec"]["checkpoint"]:
            continue
        cfg = config_of(s.params)
        cfg = cfg.resolve(cfg.kind or data_kind(train_set.name, train_set.resolution, train_set.channels), device.type,
                          channels=train_set.channels, n_train=len(train_set))
        n = len(_split_check(train_set, None, cfg)[0])
        if cfg.batch_size > n:
            key = "batch_size" if s.params["spec"]["batch_size"] else "batch_size (0: the trainer's default)"
            raise UserError(f"models.{s.params['model']}.{key}: a batch of {cfg.batch_size} is larger than the "
                            f"{n} training images (data.n_train = {shared['spec'].data.n_train}); use a smaller batch")


def config_of(p: dict):
    """The :class:`~robustlens.train.TrainConfig` of a train stage's parameters."""
    from robustlens.train import TrainConfig

    m = p["spec"]
    kw: dict[str, Any] = dict(mode=m["mode"], threat=p["threat_norm"], seed=int(m["seed"]))
    if m["mode"] != "std":
        kw["eps"] = p["eps"]
    else:  # the STD model's per-epoch PGD check at the study's eps, not the trainer's 8/255
        kw["check_eps"] = p["eps"]
    for key in ("epochs", "batch_size"):
        if m[key]:
            kw[key] = int(m[key])
    if m["lr"]:
        kw["lr"] = float(m["lr"])
    if m["schedule"]:
        kw["schedule"] = m["schedule"]
    options = dict(m["train_options"])
    if isinstance(options.get("augment"), dict):
        kw.update(_augment_options(options.pop("augment"), f"models.{p['model']}.train_options.augment"))
    kw.update(options)
    try:
        return TrainConfig(**kw)
    except TypeError as e:
        raise UserError(f"models.{p['model']}.train_options: {e}") from None


def _augment_options(table: dict, where: str) -> dict:
    """``augment = { crop = true, flip = false }`` -> TrainConfig's ``augment`` (the crop) and ``flip``."""
    unknown = sorted(set(table) - {"crop", "flip"})
    if unknown or not all(isinstance(v, bool) for v in table.values()):
        raise UserError(f"{where}: expected a table of crop = true/false and flip = true/false, got {table!r}")
    out = {"augment": table["crop"]} if "crop" in table else {}
    if "flip" in table:
        out["flip"] = table["flip"]
    return out


def _train(ctx: StageContext) -> StageResult:
    """Train the model (resuming a killed run of this stage), save it, measure it."""
    import torch
    import torch.distributed as dist

    from robustlens.models import create
    from robustlens.models.checkpoint import save_checkpoint
    from robustlens.train import train

    p = ctx.params
    name, m = p["model"], p["spec"]
    train_set = load_data(ctx.shared)["train"]
    dev = device(ctx)
    torch.manual_seed(int(m["seed"]))
    # every family takes in_channels (a 1-channel model gets a 1-channel normalisation)
    wants = m["arch"] == "small_cnn" or train_set.channels != 3
    extra = {"in_channels": train_set.channels} if wants and "in_channels" not in m["arch_options"] else {}
    model = create(m["arch"], num_classes=train_set.num_classes, **extra, **m["arch_options"])
    cfg = train_config(ctx)
    ctx.work.mkdir(parents=True, exist_ok=True)
    # resume only a run this stage started before (a killed study); a fresh stage starts quietly
    resume = (Path(ctx.work) / "state.safetensors").exists()
    processes = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    res = train(model, train_set, cfg, out_dir=ctx.work, resume=resume, device=dev)
    if ctx.shared.get("dist_worker"):  # another torchrun rank: rank 0 writes the stage
        return StageResult()
    model.eval()
    history = [{k: v for k, v in e.items() if not is_time_key(k)} for e in res.history]
    resolved = {k: v for k, v in res.config.to_dict().items() if k not in ("progress", "log", "tensorboard")}
    save_checkpoint(ctx.out / "model.safetensors", model, {"training": resolved, "model_name": name, "classes": list(train_set.classes)})
    figures = {"history": _plot_history(history, ctx.out / "history.png", name, res.config.check_eps)} if history else {}
    test = eval_subset(ctx.shared, 1000)
    notes = [f"catastrophic overfitting at epoch(s) {', '.join(map(str, res.catastrophic_overfitting))}: "
             + next(e["co_reason"] for e in history if e.get("co_reason"))] if res.catastrophic_overfitting else []
    if res.co_fallback is not None:
        notes.append(f"epochs {res.co_fallback + 1}-{res.config.epochs} trained with PGD-{res.config.attack_steps} (the fallback)")
    return StageResult({
        "model": name, "source": "trained", "checkpoint": "model.safetensors", "arch": m["arch"], "mode": m["mode"],
        "eps": p["eps"] if m["mode"] != "std" else 0.0, "epochs": resolved.get("epochs", m["epochs"]),
        "parameters": sum(t.numel() for t in model.parameters()), "config": resolved, "history": history,
        "augmentation": res.config.augmentation(), "selected_epoch": res.selected_epoch, "best_epoch": res.best_epoch,
        "catastrophic_overfitting": res.catastrophic_overfitting, "co_fallback": res.co_fallback,
        "processes": processes,  # > 1: trained under torchrun (DistributedDataParallel)
        "test_accuracy_1000": accuracy(model.to(dev), test.float(device=dev), test.labels.to(dev)),
    }, notes=notes, figures=figures,
        captions={"history": f"{name}: every per-epoch training metric; the model kept is epoch {res.selected_epoch}'s."})


def history_curves(history: list[dict], check_eps: float) -> dict[str, list]:
    """Every numeric per-epoch series of ``history`` (epoch, step and check eps aside), the
    check's PGD curve labelled with its eps: ``{label: [[epoch, value], ...]}``."""
    skip = ("epoch", "step", "check_eps")
    keys = list(dict.fromkeys(k for e in history for k, v in e.items()
                              if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)))
    label = {"check_robust_accuracy": f"check PGD accuracy (eps {check_eps:.4g})"}
    return {label.get(k, k): [[e.get("epoch", i + 1), e.get(k)] for i, e in enumerate(history)] for k in keys}


def _plot_history(history: list[dict], path: Path, name: str, check_eps: float) -> str:
    from robustlens.plot import line_chart

    return line_chart(history_curves(history, check_eps), path, figsize=(6, 3.5), xlabel="epoch",
                      title=f"training: {name}", legend_fontsize=6).name


def check_published(spec, name: str, classes: list[str], where: str) -> None:
    """A ``NAME@PATH`` checkpoint of ``models.<name>``: the study feeds it its entry's
    preprocessing and size, and the data has the entry's classes (before any training)."""
    from robustlens.models.catalogue import check_study_input, entry
    from robustlens.study.spec import checkpoint_entry

    value = spec.models[name].checkpoint
    e = entry(checkpoint_entry(value), key=f"{where}: models.{name}.checkpoint")
    check_study_input(e, spec.data.preprocessing, spec.data.size, f"{where}: models.{name}.checkpoint")
    check_checkpoint_classes(value, {"num_classes": e.num_classes, "classes": e.class_names()}, classes, f"{where}: models.{name}.checkpoint")


def check_checkpoint_classes(path: str, meta: dict, classes: list[str], where: str) -> None:
    """A checkpoint must predict exactly the data's classes (same count; same names if it has names)."""
    ck = meta.get("classes")
    n = meta.get("num_classes", len(ck) if ck else None)
    if n is not None and int(n) != len(classes):
        raise UserError(f"{where}: {path} predicts {n} classes but the data has {len(classes)} ({', '.join(classes[:10])}...)")
    if ck and list(ck) != list(classes):
        diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(ck, classes)) if a != b][:3]
        raise UserError(f"{where}: {path} has classes that do not match the data's ({'; '.join(diff)})")
