"""The study's stages, built from a :class:`~robustlens.study.spec.Spec`.

DAG (each arrow: "consumes")::

    data -> train_<model> (one per model; train or load) -> robustness
                                                         -> transforms, bias, neurons
                                                         -> saliency, featvis, sanity,
                                                            localisation, generation
                                                         -> transfer, construct (opt-in)

``transfer`` consumes train_std, train_adv and, for ``std+std`` / ``adv+adv``, a second model
of that kind: the one named by ``stages.transfer.second_std`` / ``second_adv``, or else
``train_transfer_std2`` / ``train_transfer_adv2``, extra train stages added to the DAG (the
first model's recipe with ``seed + 1``; cached and resumable like every train stage, and
left out of the analysis stages). ``construct`` consumes train_std (D_det, D_rand) and
train_adv (D_R).

Every stage returns a JSON-able dict (its schema is in ``docs/results-schema.md``) and writes
its figures (PNG, matplotlib Agg) into its own folder; ``result["figures"]`` maps a figure
key to its file name. Each stage hashes only its own parameters (plus, through the DAG, its
inputs), so a change to e.g. ``stages.transforms.blur_sigmas`` reruns ``transforms`` only.

Seeds: every random draw is seeded from ``spec.seed`` plus a fixed per-stage offset, so a
rerun (or a killed and resumed run) gives the same numbers on the same machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from robustlens.errors import UserError
from robustlens.study.runner import NotMeasured, StageContext, StageDef, require
from robustlens.study.spec import Spec, parse_eps, transfer_second_models

# Fixed per-stage offsets added to spec.seed (documented, never changed).
SEED_OFFSETS = {
    "data": 0, "robustness": 11, "transforms": 12, "bias": 13, "neurons": 14, "saliency": 15,
    "featvis": 16, "sanity": 17, "localisation": 18, "generation": 19, "transfer": 20, "construct": 21,
}


# ----------------------------------------------------------------------------- shared helpers


def _spec(ctx: StageContext) -> Spec:
    return ctx.shared["spec"]


def spec_device(spec: Spec):
    """The spec's device: ``auto`` / ``""`` = cuda when available, else cpu."""
    import torch

    if spec.device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from robustlens.cli_common import resolve_device

    return resolve_device(spec.device)


def _device(ctx: StageContext):
    if "device" not in ctx.shared:
        ctx.shared["device"] = spec_device(_spec(ctx))
    return ctx.shared["device"]


def _seed(ctx: StageContext, stage: str) -> int:
    return int(_spec(ctx).seed) * 1000 + SEED_OFFSETS[stage]


def _generator(ctx: StageContext, stage: str):
    import torch

    return torch.Generator().manual_seed(_seed(ctx, stage))


def load_data(shared: dict) -> dict:
    """The data splits of the spec ({"train", "test"[, "conflict"]}), loaded once per run."""
    if "data" in shared:
        return shared["data"]
    spec: Spec = shared["spec"]
    d = spec.data
    shared["data"] = _read_splits(spec, d.size or None, {}, d.n_train, d.n_test, conflict=True)
    return shared["data"]


def load_target_splits(shared: dict, size: int, n_train: int = 0, n_test: int = 0, extra_options: dict | None = None) -> dict:
    """The study's data set at side ``size`` ({"train", "test"}), for the transfer stage.

    The same source and options as ``[data]`` (plus ``extra_options``): the procedural set is
    rendered at ``size``, an on-disk set is resized by its reader. ``n_train`` / ``n_test``
    (0 = ``data.n_train`` / ``data.n_test``) limit the splits exactly as :func:`load_data` does.
    Memoised per run."""
    spec: Spec = shared["spec"]
    d = spec.data
    extra = dict(extra_options or {})
    n_train, n_test = n_train or d.n_train, n_test or d.n_test
    key = (int(size), n_train, n_test, tuple(sorted((k, repr(v)) for k, v in extra.items())))
    memo = shared.setdefault("targets", {})
    if key not in memo:
        if size == d.size and not extra and (n_train, n_test) == (d.n_train, d.n_test):
            data = load_data(shared)
            memo[key] = {"train": data["train"], "test": data["test"]}
        else:
            memo[key] = _read_splits(spec, int(size), extra, n_train, n_test, conflict=False)
    return memo[key]


def _read_splits(spec: Spec, size: int | None, extra: dict, n_train: int, n_test: int, conflict: bool) -> dict:
    """Read the spec's data source at ``size``: train, test (or a seeded 20% of a lone split)
    and, when ``conflict`` and present, the cue-conflict split; ``n_train`` / ``n_test`` cut
    the splits to that many images by a seeded permutation."""
    import torch

    from robustlens.data import load_splits
    from robustlens.data.source import is_procedural

    d = spec.data
    opts = {**d.options, **extra}
    procedural = is_procedural(d.source)
    if procedural:
        if n_train and "n_train" not in opts:
            opts["n_train"] = n_train
        if n_test and "n_test" not in opts:
            opts["n_test"] = n_test
        if not conflict:
            opts["splits"] = ["train", "test"]
    splits = load_splits(d.source, size=size, format=d.format or None, **opts)
    if "train" not in splits:
        raise UserError(f"data.source {d.source!r}: no 'train' split (found {', '.join(splits)})")
    test_name = next((s for s in ("test", "val", "valid", "validation") if s in splits), None)
    if test_name is None:
        # One split only: hold out a seeded 20% as the test split.
        full = splits["train"]
        g = torch.Generator().manual_seed(spec.seed)
        perm = torch.randperm(len(full), generator=g)
        k = max(1, len(full) // 5)
        splits = {"train": full.subset(perm[k:].sort().values), "test": full.subset(perm[:k].sort().values)}
        test_name = "test"
    out = {"train": splits["train"], "test": splits[test_name]}
    if conflict and "conflict" in splits:
        out["conflict"] = splits["conflict"]
    for key, n in (("train", n_train), ("test", n_test)):
        if n and len(out[key]) > n:
            g = torch.Generator().manual_seed(spec.seed + (1 if key == "test" else 0))
            idx = torch.randperm(len(out[key]), generator=g)[:n].sort().values
            out[key] = out[key].subset(idx)
    return out


def eval_subset(shared: dict, n: int, split: str = "test"):
    """``n`` images of a split drawn by a permutation seeded with the spec's seed (the same
    images for every stage; splits read from folders are sorted by class, so never the first n)."""
    data = load_data(shared)[split]
    return data.sample(n, seed=int(shared["spec"].seed))


def load_model(ctx: StageContext, name: str):
    """Model ``name`` of the spec, from its train stage's folder (loaded once per run), in eval mode."""
    memo = ctx.shared.setdefault("models", {})
    if name in memo:
        return memo[name]
    from robustlens.models.checkpoint import load_checkpoint

    out = ctx.deps[f"train_{name}"]
    path = out.path(out.result["checkpoint"]) if out.result.get("source") == "trained" else Path(out.result["checkpoint"])
    model, _meta = load_checkpoint(path, device=_device(ctx))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    memo[name] = model
    return model


def analysis_models(spec: Spec) -> list[str]:
    """Models compared in the analysis stages: every model except a dedicated generation
    judge and the second backbones named by ``stages.transfer.second_std`` / ``second_adv``."""
    helpers = {spec.stages.generation.judge, spec.stages.transfer.second_std, spec.stages.transfer.second_adv} - {""}
    return [m for m in spec.models if m not in helpers or m in ("std", "adv")]


def _accuracy(model, x, y, batch_size: int = 500) -> float:
    import torch

    hits = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            hits += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return hits / max(1, len(x))


def _tty() -> bool:
    """Progress bars inside long stages only on a terminal."""
    import sys

    return sys.stderr.isatty()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    plt = _plt()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path.name


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- data


def stage_data(ctx: StageContext) -> dict:
    """Load the splits, record their summaries and draw a grid of training samples."""
    data = load_data(ctx.shared)
    train = data["train"]
    spec = _spec(ctx)
    from robustlens.explain.render import image_grid

    shown = train.sample(32, seed=spec.seed)
    labels = [train.classes[int(c)] for c in shown.labels]
    image_grid(shown.float(), ctx.out / "samples.png", ncol=8, labels=labels, title="training samples")
    figures = {"samples": "samples.png"}
    captions = {"samples": "Training images (a seeded sample) with their labels."}
    if "conflict" in data and len(data["conflict"]):
        c = data["conflict"].head(min(16, len(data["conflict"])))
        tex = c.factor("texture").tolist() if "texture" in c.factor_names else [None] * len(c)
        lab = [f"{c.classes[int(y)]} / tex {t}" for y, t in zip(c.labels, tex)]
        image_grid(c.float(), ctx.out / "conflict.png", ncol=8, labels=lab, title="cue-conflict images (label / texture class)")
        figures["conflict"] = "conflict.png"
        captions["conflict"] = "Cue-conflict images: the shape of one class filled with the texture of another."
    return {
        "source": spec.data.source,
        "options": spec.data.options,
        "classes": list(train.classes),
        "resolution": list(train.resolution),
        "channels": train.channels,
        "splits": {k: {"images": len(v), "per_class": v.class_counts()} for k, v in data.items()},
        "has_masks": train.masks is not None,
        "has_boxes": train.boxes is not None,
        "factor_names": list(train.factor_names),
        "figures": figures,
        "captions": captions,
    }


# ----------------------------------------------------------------------------- train / load


def stage_train(ctx: StageContext) -> dict:
    """Train model ``params["model"]`` (resumable through its work folder) or load its checkpoint."""
    import torch

    p = ctx.params
    name = p["model"]
    m = p["spec"]
    data = load_data(ctx.shared)
    train_set = data["train"]
    from robustlens.models.checkpoint import load_checkpoint, save_checkpoint

    if m["checkpoint"]:
        model, meta = load_checkpoint(m["checkpoint"], device="cpu")
        check_checkpoint_classes(m["checkpoint"], meta, list(train_set.classes), f"models.{name}.checkpoint")
        test = eval_subset(ctx.shared, 1000)
        model.eval()
        return {
            "model": name, "source": "checkpoint", "checkpoint": m["checkpoint"], "sha256": p.get("checkpoint_sha256", ""),
            "arch": meta.get("arch", getattr(model, "arch", "")), "parameters": sum(t.numel() for t in model.parameters()),
            "eps": (meta.get("training") or {}).get("eps", ""), "epochs": (meta.get("training") or {}).get("epochs", ""),
            "test_accuracy_1000": _accuracy(model, test.float(), test.labels),
            "figures": {},
        }
    train_mod = require("robustlens.train", "training")
    from robustlens.models import create

    if not hasattr(train_mod, "train") or not hasattr(train_mod, "TrainConfig"):
        raise NotMeasured("training: robustlens.train.train / TrainConfig are not available yet")
    device = _device(ctx)
    torch.manual_seed(int(m["seed"]))
    model = create(m["arch"], num_classes=train_set.num_classes, in_channels=train_set.channels, **m["arch_options"]) \
        if m["arch"] == "small_cnn" else create(m["arch"], num_classes=train_set.num_classes, **m["arch_options"])
    kw: dict[str, Any] = dict(mode=m["mode"], threat=p["threat_norm"], seed=int(m["seed"]))
    if m["mode"] != "std":
        kw["eps"] = p["eps"]
    for key in ("epochs", "batch_size"):
        if m[key]:
            kw[key] = int(m[key])
    if m["lr"]:
        kw["lr"] = float(m["lr"])
    if m["schedule"]:
        kw["schedule"] = m["schedule"]
    kw.update(m["train_options"])
    try:
        cfg = train_mod.TrainConfig(**kw)
    except TypeError as e:
        raise UserError(f"models.{name}.train_options: {e}") from None
    ctx.work.mkdir(parents=True, exist_ok=True)
    # resume only a run this stage started before (a killed study); a fresh stage starts quietly
    resume = (Path(ctx.work) / "state.safetensors").exists()
    import torch.distributed as dist

    processes = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    res = train_mod.train(model, train_set, cfg, out_dir=ctx.work, resume=resume, device=device)
    if ctx.shared.get("dist_worker"):  # another torchrun rank: rank 0 writes the stage
        return {}
    model.eval()
    history = _history(res)
    resolved = _resolved_config(res, cfg)
    meta = {"training": resolved, "model_name": name, "classes": list(train_set.classes)}
    save_checkpoint(ctx.out / "model.safetensors", model, meta)
    figures = {}
    if history:
        figures["history"] = _plot_history(history, ctx.out / "history.png", name)
    test = eval_subset(ctx.shared, 1000)
    return {
        "model": name, "source": "trained", "checkpoint": "model.safetensors", "arch": m["arch"], "mode": m["mode"],
        "eps": p["eps"] if m["mode"] != "std" else 0.0, "epochs": resolved.get("epochs", m["epochs"]),
        "parameters": sum(t.numel() for t in model.parameters()), "config": resolved, "history": history,
        "processes": processes,  # > 1: trained under torchrun (DistributedDataParallel)
        "test_accuracy_1000": _accuracy(model.to(device), test.float(device=device), test.labels.to(device)),
        "figures": figures,
        "captions": {"history": f"{name}: per-epoch training metrics."},
    }


def _history(res: Any) -> list[dict]:
    for key in ("history", "epochs", "metrics"):
        h = getattr(res, key, None) if not isinstance(res, dict) else res.get(key)
        if isinstance(h, list):
            return [{k: v for k, v in e.items() if not _is_time_key(k)} for e in h if isinstance(e, dict)]
    return []


def _is_time_key(k: str) -> bool:
    k = k.lower()
    return any(t in k for t in ("second", "time", "images_per_s", "img_s", "per_sec", "throughput", "wall"))


def _resolved_config(res: Any, cfg: Any) -> dict:
    c = getattr(res, "config", None) if not isinstance(res, dict) else res.get("config")
    if c is None:
        c = cfg
    d = c.to_dict() if hasattr(c, "to_dict") else (dataclasses.asdict(c) if dataclasses.is_dataclass(c) else dict(c))
    return {k: v for k, v in d.items() if k not in ("progress", "log", "tensorboard")}


def _plot_history(history: list[dict], path: Path, name: str) -> str:
    plt = _plt()
    keys = [k for k in history[0] if k not in ("epoch", "step", "lr") and isinstance(history[0][k], (int, float))][:4]
    fig, ax = plt.subplots(figsize=(5, 3))
    for k in keys:
        ax.plot([e.get("epoch", i) for i, e in enumerate(history)], [e.get(k) for e in history], marker="o", label=k)
    ax.set(xlabel="epoch", title=f"training: {name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def check_checkpoint_classes(path: str, meta: dict, classes: list[str], where: str) -> None:
    """A checkpoint must predict exactly the data's classes (same count; same names if it has names)."""
    ck = meta.get("classes")
    n = meta.get("num_classes", len(ck) if ck else None)
    if n is not None and int(n) != len(classes):
        raise UserError(f"{where}: {path} predicts {n} classes but the data has {len(classes)} ({', '.join(classes[:10])}...)")
    if ck and list(ck) != list(classes):
        diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(ck, classes)) if a != b][:3]
        raise UserError(f"{where}: {path} has classes that do not match the data's ({'; '.join(diff)})")


# ----------------------------------------------------------------------------- robustness


def stage_robustness(ctx: StageContext) -> dict:
    """Clean accuracy, PGD robust accuracy and the AutoAttack-style ensemble (Croce & Hein 2020)."""
    from robustlens.threat import make_threat

    ev = require("robustlens.attacks.evaluate", "robustness")

    p = ctx.params
    spec = _spec(ctx)
    device = _device(ctx)
    threat = make_threat(p["threat"]["norm"], p["threat"]["eps"])
    sub = eval_subset(ctx.shared, p["n"])
    x, y = sub.float(), sub.labels
    out_models = {}
    for name in analysis_models(spec):
        model = load_model(ctx, name)
        r = ev.robust_accuracy(model, (x, y), threat, attack="pgd", steps=p["pgd_steps"], restarts=p["pgd_restarts"],
                               batch_size=p["batch_size"], device=device, seed=_seed(ctx, "robustness"), progress=_tty())
        entry = {"clean_accuracy": r["clean_accuracy"], "robust_accuracy": r["robust_accuracy"],
                 "mean_norm": r.get("mean_norm"), "n": r.get("n", len(x))}
        if p["autoattack"]:
            k = min(p["autoattack_n"], len(x))
            try:
                ra = ev.robust_accuracy(model, (x[:k], y[:k]), threat, attack="autoattack", batch_size=p["batch_size"],
                                        device=device, seed=_seed(ctx, "robustness"), progress=_tty(),
                                        attacks=p["autoattack_attacks"], steps=p["autoattack_steps"],
                                        n_target_classes=p["autoattack_targets"])
                entry["autoattack"] = {"robust_accuracy": ra["robust_accuracy"], "clean_accuracy": ra["clean_accuracy"],
                                       "per_attack": ra.get("per_attack"), "n": k}
            except NotMeasured as e:
                entry["autoattack"] = {"status": "not_measured", "reason": str(e)}
        curve = []
        for eps in p["eps_grid"]:
            t = make_threat(p["threat"]["norm"], eps)
            re_ = ev.robust_accuracy(model, (x, y), t, attack="pgd", steps=p["pgd_steps"], restarts=1,
                                     batch_size=p["batch_size"], device=device, seed=_seed(ctx, "robustness"), progress=_tty())
            curve.append([float(eps), re_["robust_accuracy"]])
        if curve:
            entry["eps_curve"] = curve
        out_models[name] = entry
    figures = {"accuracy": _plot_accuracy(out_models, ctx.out / "accuracy.png", p)}
    if any("eps_curve" in m for m in out_models.values()):
        figures["eps_curve"] = _plot_eps_curve(out_models, ctx.out / "eps_curve.png", p)
    return {"n": len(x), "autoattack_n": min(p["autoattack_n"], len(x)) if p["autoattack"] else 0,
            "threat": p["threat"], "pgd": {"steps": p["pgd_steps"], "restarts": p["pgd_restarts"]},
            "models": out_models, "figures": figures,
            "captions": {"accuracy": "Clean accuracy, PGD robust accuracy and the ensemble's robust accuracy.",
                         "eps_curve": "PGD robust accuracy against eps."}}


def torch_generator(seed: int):
    import torch

    return torch.Generator().manual_seed(int(seed))


def _plot_accuracy(models: dict, path: Path, p: dict) -> str:
    plt = _plt()
    names = list(models)
    cats = ["clean", f"PGD-{p['pgd_steps']}"] + (["ensemble"] if p["autoattack"] else [])
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    w = 0.8 / len(names)
    for j, n in enumerate(names):
        m = models[n]
        vals = [m["clean_accuracy"], m["robust_accuracy"]] + ([m.get("autoattack", {}).get("robust_accuracy", float("nan"))] if p["autoattack"] else [])
        xs = [i + j * w for i in range(len(cats))]
        ax.bar(xs, vals, w, label=n)
        for xv, v in zip(xs, vals):
            ax.text(xv, v + 0.01, f"{v:.2f}", ha="center", fontsize=7)
    ax.set_xticks([i + w * (len(names) - 1) / 2 for i in range(len(cats))], cats)
    ax.set(ylim=(0, 1.08), ylabel="accuracy", title=f"{p['threat']['norm']} eps={p['threat']['eps']:.4g} ({p['threat']['eps'] * 255:.3g}/255)")
    ax.legend()
    return _save(fig, path)


def _plot_eps_curve(models: dict, path: Path, p: dict) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for n, m in models.items():
        c = m.get("eps_curve") or []
        ax.plot([a for a, _ in c], [b for _, b in c], marker="o", label=n)
    ax.set(xlabel="eps", ylabel="PGD accuracy", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


# ----------------------------------------------------------------------------- transforms


def stage_transforms(ctx: StageContext) -> dict:
    """Accuracy under blur, median, reversal, stylisation, silhouettes, edges (Sec. 4.1; Chen et al.)."""
    ev = require("robustlens.probes.evaluate", "transformations")
    from robustlens.probes.transforms import get_probe

    p = ctx.params
    spec = _spec(ctx)
    sub = eval_subset(ctx.shared, p["n"])
    probes = [
        get_probe("blur").with_params(levels=p["blur_sigmas"], kernel_size=p["blur_kernel"]),
        get_probe("median").with_params(levels=list(range(0, p["median_repeats"] + 1)), kernel_size=p["median_kernel"]),
    ]
    for flag, pname in (("reversal", "invert"), ("greyscale", "greyscale"), ("stylise", "stylize")):
        if p[flag]:
            probes.append(get_probe(pname))
    skipped = []
    from dataclasses import replace

    for flag, pname in (("silhouettes", "silhouette"), ("edges", "edges")):
        if p[flag]:
            if sub.masks is None and pname == "silhouette":
                skipped.append(f"{pname} (the data has no masks)")
                continue
            for pol in p.get("shape_polarity", ["dark"]):
                probe = get_probe(pname).with_params(polarity=pol)
                probes.append(probe if pol == "dark" else replace(probe, name=f"{pname}_light"))
    models = {n: load_model(ctx, n) for n in analysis_models(spec)}
    data = load_data(ctx.shared)
    pool = data["train"].sample(512, seed=_seed(ctx, "transforms"))
    rows = ev.evaluate_probes(models, sub, probes, batch_size=p["batch_size"], device=_device(ctx),
                              style_pool=pool.images, pool_labels=pool.labels, seed=_seed(ctx, "transforms"))
    background = None
    if sub.masks is not None:
        # the data's own background decides which silhouette polarity is "in distribution"
        k = min(256, len(sub))
        xs, ms = sub.float(slice(0, k)), sub.masks[:k]
        bg = float(xs.mean(1)[~ms].mean()) if (~ms).any() else 1.0
        background = {"mean_intensity": bg, "matched_polarity": "light" if bg < 0.5 else "dark"}
    out: dict[str, dict] = {}
    for name in models:
        mine = [r for r in rows if r["model"] == name]
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
        out[name] = entry
    ev.plot_curves(rows, ctx.out / "curves.png")
    figures = {"curves": "curves.png", "examples": _probe_examples(sub, probes, pool, ctx.out / "examples.png", _seed(ctx, "transforms"))}
    single = [pr.name for pr in probes if pr.level_name is None]
    header = ["model", "clean"] + single
    table_rows = [[n, out[n].get("clean")] + [out[n].get(s) for s in single] for n in models]
    curve_tabs = {}
    for pname in ("blur", "median"):
        lv = out[next(iter(models))][pname]["levels"]
        curve_tabs[f"{pname} ({out[next(iter(models))][pname]['level_name']})"] = {
            "header": ["model"] + [str(v) for v in lv], "rows": [[n] + out[n][pname]["accuracy"] for n in models]}
    return {
        "n": len(sub), "blur_kernel": p["blur_kernel"], "median_kernel": p["median_kernel"], "models": out,
        "skipped": skipped, "rows": rows, "shape_background": background,
        "summary": f"Top-1 accuracy on {len(sub)} test images under each transformation (Gaussian blur kernel {p['blur_kernel']}, "
                   f"median kernel {p['median_kernel']} applied 0..{p['median_repeats']} times)."
                   + (f" Skipped: {', '.join(skipped)}." if skipped else ""),
        "tables": {"single-level transformations (top-1)": {"header": header, "rows": table_rows}, **curve_tabs},
        "figures": figures,
        "captions": {"curves": "Accuracy against blur sigma and median repeats; bars: reversal, stylisation, silhouettes, edges "
                               "(*_light: drawn white on black).",
                     "examples": "One test image under each transformation."},
    }


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


# ----------------------------------------------------------------------------- bias


def stage_bias(ctx: StageContext) -> dict:
    """Shape / texture / colour bias on cue-conflict images (model-vs-human definition:
    shape hits / (shape hits + texture hits) over images whose cues disagree; Geirhos et al.
    2019), and optionally a sweep over texture contrast."""
    data = load_data(ctx.shared)
    if "conflict" not in data or data["conflict"].factors is None:
        raise NotMeasured("cue-conflict bias needs a data set with a cue-conflict split (the procedural set)")
    p = ctx.params
    spec = _spec(ctx)
    conflict = data["conflict"].head(min(p["n"], len(data["conflict"])))
    models = {n: load_model(ctx, n) for n in analysis_models(spec)}
    try:
        pb = require("robustlens.probes.bias", "bias")
        out = {n: pb.model_bias(m, conflict, device=_device(ctx)) for n, m in models.items()}
    except NotMeasured:
        out = {n: cue_conflict_bias(m, conflict, _device(ctx)) for n, m in models.items()}
    sweep = {}
    figures = {}
    if p["contrast_grid"]:
        from robustlens.data import load

        for c in p["contrast_grid"]:
            opts = {**spec.data.options, "contrast": float(c), "n_conflict": len(conflict)}
            cs = load(spec.data.source, split="conflict", size=spec.data.size or None, **opts)
            for n, m in models.items():
                sweep.setdefault(n, []).append([float(c), cue_conflict_bias(m, cs, _device(ctx))["shape_bias"]])
        figures["contrast"] = _plot_sweep(sweep, ctx.out / "contrast_sweep.png")
    figures["bias"] = _plot_bias(out, ctx.out / "bias.png")
    return {"n": len(conflict), "models": out, "contrast_sweep": sweep, "figures": figures,
            "summary": "Shape bias = shape hits / (shape hits + texture hits) on cue-conflict images whose shape and texture "
                       "classes differ; colour bias likewise with colour (images whose colour class differs from the shape).",
            "captions": {"bias": "Shape, texture and colour bias.", "contrast": "Shape bias against texture contrast."}}


def cue_conflict_bias(model, conflict, device) -> dict:
    """Shape, texture and colour bias (model-vs-human: cue hits / (shape hits + cue hits))."""
    import torch

    x = conflict.float()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 500].to(device)).argmax(1).cpu() for i in range(0, len(x), 500)])
    shape = conflict.factor("shape")
    out: dict[str, Any] = {"n": len(conflict), "accuracy_on_label": float((pred == conflict.labels).float().mean())}
    for cue in ("texture", "colour"):
        if cue not in conflict.factor_names:
            continue
        f = conflict.factor(cue)
        keep = f != shape
        sh = int((pred[keep] == shape[keep]).sum())
        ch = int((pred[keep] == f[keep]).sum())
        out[f"{cue}_hits"] = ch
        out[f"shape_hits_vs_{cue}"] = sh
        out[f"n_{cue}_conflict"] = int(keep.sum())
        out[f"{cue}_bias"] = ch / (sh + ch) if sh + ch else None
        if cue == "texture":
            out["shape_bias"] = sh / (sh + ch) if sh + ch else None
    return out


def _plot_bias(out: dict, path: Path) -> str:
    plt = _plt()
    cats = ["shape_bias", "texture_bias", "colour_bias"]
    fig, ax = plt.subplots(figsize=(5, 3))
    w = 0.8 / len(out)
    for j, (n, m) in enumerate(out.items()):
        vals = [m.get(c) if m.get(c) is not None else float("nan") for c in cats]
        ax.bar([i + j * w for i in range(len(cats))], vals, w, label=n)
    ax.set_xticks([i + w * (len(out) - 1) / 2 for i in range(len(cats))], [c.replace("_", " ") for c in cats])
    ax.set(ylim=(0, 1.02), title="cue-conflict bias")
    ax.legend()
    return _save(fig, path)


def _plot_sweep(sweep: dict, path: Path) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    for n, pts in sweep.items():
        ax.plot([a for a, _ in pts], [b if b is not None else float("nan") for _, b in pts], marker="o", label=n)
    ax.set(xlabel="texture contrast", ylabel="shape bias", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


# ----------------------------------------------------------------------------- neurons


def first_layer_stats(model) -> dict:
    """Mean |w| of the first convolution (main paper Sec. 4.1: ADV's are smaller) and the share
    of each filter's spectral energy above half the Nyquist radius, zero-padded to 16x16
    (Chen et al.: ADV filters are smoother), averaged over filters."""
    import torch

    w = model.first_conv.weight.detach().float().cpu()
    w0 = w - w.mean(dim=(2, 3), keepdim=True)
    spec = torch.fft.fftshift(torch.fft.fft2(w0, s=(16, 16)), dim=(-2, -1)).abs() ** 2
    fy = torch.fft.fftshift(torch.fft.fftfreq(16)).view(-1, 1)
    fx = torch.fft.fftshift(torch.fft.fftfreq(16)).view(1, -1)
    high = ((fy**2 + fx**2).sqrt() > 0.25).float()
    e = spec.sum(dim=(1, 2, 3))
    hf = (spec * high).sum(dim=(1, 2, 3)) / e.clamp_min(1e-12)
    tv = (w[..., 1:, :] - w[..., :-1, :]).abs().sum(dim=(1, 2, 3)) + (w[..., :, 1:] - w[..., :, :-1]).abs().sum(dim=(1, 2, 3))
    tv = tv / w.abs().sum(dim=(1, 2, 3)).clamp_min(1e-12)
    return {"first_layer_norm": float(w.abs().mean()), "first_layer_hf": float(hf.mean()), "first_layer_tv": float(tv.mean()),
            "filters": int(w.shape[0]), "kernel": list(w.shape[2:])}


def stage_neurons(ctx: StageContext) -> dict:
    """Neuron analysis (Chen et al. 2020): smoothness of first-layer filters (total variation,
    high-frequency share; plus the main paper's mean |w|) and concept selectivity of channels
    at ``layers`` on the procedural set's factors (shape / texture / colour): how many concepts
    a channel responds to is the measure of simplicity."""
    neu = require("robustlens.probes.neurons", "neuron analysis")
    p = ctx.params
    spec = _spec(ctx)
    models = {n: load_model(ctx, n) for n in analysis_models(spec)}
    sub = eval_subset(ctx.shared, p["n"])
    notes = []
    data_for = sub if sub.factors is not None and sub.factor_names else None
    if data_for is None:
        notes.append("the data has no factor labels: concept selectivity not measured")
    raw = {n: neu.analyse_model(m, data_for, layers=p["layers"] or None, device=_device(ctx)) for n, m in models.items()}
    out = {}
    for n, r in raw.items():
        fl = r["first_layer"]
        entry = {**first_layer_stats(models[n]), "first_layer_tv": fl.get("tv_mean"), "first_layer_hf": fl.get("hf_share_mean"),
                 "first_layer_smoothness": fl}
        layers = {}
        tot, cnt = 0.0, 0
        for layer, lr in (r.get("layers") or {}).items():
            summ = lr["summary"]
            layers[layer] = {"summary": summ, "n_concepts": lr["n_concepts"], "best_factor": lr["best_factor"]}
            tot += summ["mean_concepts"] * summ["channels"]
            cnt += summ["channels"]
        if layers:
            entry["layers"] = layers
            entry["concepts_per_channel"] = tot / cnt if cnt else None
        out[n] = entry
    neu.plot_neurons(raw, ctx.out / "neurons.png")
    rows = [[n, o["first_layer_norm"], o["first_layer_hf"], o["first_layer_tv"], o.get("concepts_per_channel", "not measured")]
            for n, o in out.items()]
    table2 = [[r["model"], r["layer"], r.get("mean_concepts", ""), r.get("share_no_concept", "")]
              + [r.get(f"best_{f}", "") for f in ("shape", "texture", "colour")] for r in neu.compare_summary(raw) if "mean_concepts" in r]
    tables = {"first-layer filters and channels": {"header": ["model", "mean |w|", "high-freq share", "TV / L1", "concepts/channel"], "rows": rows}}
    if table2:
        tables["channels per layer"] = {"header": ["model", "layer", "mean concepts", "share with no concept",
                                                   "best: shape", "best: texture", "best: colour"], "rows": table2}
    return {"n": len(sub), "models": out, "notes": notes, "tables": tables,
            "summary": "First-layer filters: mean |w| (main paper: ADV's are smaller), share of spectral energy beyond half "
                       "the Nyquist frequency and total variation / L1 (Chen et al.: ADV's are smoother); channels: number of "
                       "concepts (factor values whose mean activation exceeds the channel's mean + 1 std) and the factor "
                       "(eta squared) that explains each channel best." + (" " + " ".join(notes) if notes else ""),
            "figures": {"neurons": "neurons.png"},
            "captions": {"neurons": "Filter smoothness, concepts per channel and the factor that explains each channel best."}}


def _mean_concepts(sel: Any) -> float | None:
    if isinstance(sel, dict):
        for k in ("concepts_per_channel", "mean_concepts", "mean_concepts_per_channel"):
            if isinstance(sel.get(k), (int, float)):
                return float(sel[k])
        vals = [_mean_concepts(v) for v in sel.values() if isinstance(v, dict)]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None
    return None


# ----------------------------------------------------------------------------- saliency


def _random_model(ctx: StageContext, like: str = "std"):
    """A randomly initialised model of the STD model's architecture (the main paper's App. A baseline)."""
    import torch

    from robustlens.models import create

    ref = load_model(ctx, like)
    torch.manual_seed(_seed(ctx, "saliency"))
    kwargs = {}
    if getattr(ref, "arch", "") == "small_cnn":
        kwargs = {"width": ref.first_conv.out_channels, "in_channels": ref.first_conv.in_channels}
    m = create(ref.arch, num_classes=ref.num_classes, **kwargs)
    m.normalize.set(ref.normalize.mean.flatten().tolist(), ref.normalize.std.flatten().tolist())
    return m.to(_device(ctx)).eval()


def _method_opts(method: str, p: dict, seed: int) -> dict:
    import torch

    if method == "smoothgrad":
        return {"n_samples": p.get("smoothgrad_samples", 50), "noise_level": p.get("smoothgrad_sigma", 0.2),
                "generator": torch.Generator().manual_seed(seed)}
    if method in ("ig", "ig_path_average"):
        return {"steps": p.get("ig_steps", 50)}
    return {}


def object_energy(maps, masks) -> list[float]:
    """Share of each map's absolute saliency (summed over channels) inside the object mask."""
    a = maps.abs().sum(1)
    m = masks.to(a.dtype)
    return ((a * m).sum(dim=(1, 2)) / a.sum(dim=(1, 2)).clamp_min(1e-12)).tolist()


def stage_saliency(ctx: StageContext) -> dict:
    """Saliency grids, methods x models (STD, ADV, random), main paper Fig. 2 and App. A."""
    sal = require("robustlens.explain.saliency", "saliency")
    from robustlens.explain.render import saliency_grid

    p = ctx.params
    spec = _spec(ctx)
    device = _device(ctx)
    sub = eval_subset(ctx.shared, p["n"])
    x, y = sub.float(device=device), sub.labels.to(device)
    models = {n: load_model(ctx, n) for n in analysis_models(spec)}
    if p["random_model"]:
        models["random"] = _random_model(ctx)
    maps: dict[str, dict[str, Any]] = {}
    for mi, (n, m) in enumerate(models.items()):
        for method in p["methods"]:
            maps.setdefault(method, {})[n] = sal.saliency(m, x, y, method=method, **_method_opts(method, p, _seed(ctx, "saliency") + mi)).detach().cpu()
    figures, captions = {}, {}
    labels = [sub.classes[int(c)] for c in sub.labels]
    k = min(4, len(sub))
    saliency_grid(x[:k].cpu(), {f"{method}\n{n}": v[:k] for method, per in maps.items() for n, v in per.items()},
                  ctx.out / "grid_all.png", mode="signed", row_labels=labels[:k], cell=1.1,
                  title="all methods: " + ", ".join(f"{n}" for n in models) + " side by side")
    figures["grid_all"] = "grid_all.png"
    captions["grid_all"] = "Every method (column groups) for every model on the same test images (main paper Fig. 2 layout)."
    for method, per in maps.items():
        f = f"grid_{method}.png"
        saliency_grid(x.cpu(), {f"{method} / {n}": v for n, v in per.items()}, ctx.out / f, mode="signed", row_labels=labels,
                      title=f"{method}: " + " vs ".join(per))
        figures[f"grid_{method}"] = f
        captions[f"grid_{method}"] = f"{method}: rows = test images, columns = models (display clipped at 3 std)."
    energy: dict[str, dict[str, float]] = {}
    if sub.masks is not None:
        for method, per in maps.items():
            for n, v in per.items():
                e = object_energy(v, sub.masks)
                energy.setdefault(n, {})[method] = sum(e) / len(e)
    rows = [[n] + [energy[n].get(mm) for mm in p["methods"]] for n in energy]
    out = {"n": len(sub), "methods": p["methods"], "models": list(models), "object_energy": energy,
           "summary": "Share of each map's |saliency| that falls inside the object's mask (higher: the map follows the object, "
                      "not the background or fine texture)." if energy else "The data has no masks: object energy not measured.",
           "figures": figures, "captions": captions}
    if rows:
        out["tables"] = {"share of |saliency| on the object": {"header": ["model"] + p["methods"], "rows": rows}}
    return out


# ----------------------------------------------------------------------------- featvis


def stage_featvis(ctx: StageContext) -> dict:
    """First-layer filter grids and deeper channels by gradient ascent (Erhan et al. 2009; main Fig. 3-4)."""
    from robustlens.explain.render import image_grid

    p = ctx.params
    spec = _spec(ctx)
    models = {n: load_model(ctx, n) for n in analysis_models(spec)}
    figures, captions, notes = {}, {}, []
    for n, m in models.items():
        w = m.first_conv.weight.detach().float().cpu()
        if w.shape[1] == 3:
            lo, hi = w.amin(dim=(1, 2, 3), keepdim=True), w.amax(dim=(1, 2, 3), keepdim=True)
            # One common scale across models would hide the shapes; per-filter min-max as Lucid does.
            vis = (w - lo) / (hi - lo).clamp_min(1e-12)
            f = f"filters_{n}.png"
            image_grid(vis, ctx.out / f, ncol=min(16, w.shape[0]), title=f"{n}: first-layer filters", cell=0.6)
            figures[f"filters_{n}"] = f
            captions[f"filters_{n}"] = f"{n}: first-layer filters (each min-max scaled)."
    channels: dict[str, Any] = {}
    try:
        fv = require("robustlens.explain.featvis", "deeper-channel visualisation")
    except NotMeasured as e:
        fv = None
        notes.append(str(e))
    if fv is not None:
        from robustlens.explain.saliency import last_conv_name

        for n, m in models.items():
            layers = p["layers"] or [last_conv_name(m)]
            for layer in layers:
                chans = list(range(min(p["channels"], _layer_channels(m, layer))))
                imgs = _visualise(fv, m, layer, chans, p, _device(ctx), size=load_data(ctx.shared)["train"].resolution[0])
                f = f"channels_{n}_{layer.replace('.', '_')}.png"
                image_grid(imgs.cpu(), ctx.out / f, ncol=min(8, len(chans)), labels=[str(c) for c in chans],
                           title=f"{n}: {layer}, channels 0..{len(chans) - 1}")
                figures[f"channels_{n}_{layer}"] = f
                captions[f"channels_{n}_{layer}"] = f"{n}: inputs maximising channels of {layer} (gradient ascent, {p['steps']} steps)."
                channels.setdefault(n, {})[layer] = {"channels": chans, "hf_share": _hf_share(imgs)}
    return {"models": list(models), "channels": channels, "notes": notes, "figures": figures, "captions": captions,
            "summary": " ".join(notes)}


def _layer_channels(model, layer: str) -> int:
    from robustlens.explain.saliency import find_layer

    mod = find_layer(model, layer)
    return int(getattr(mod, "out_channels", getattr(mod, "num_features", 8)))


def _visualise(fv, model, layer: str, chans: list[int], p: dict, device, size: int):
    fn = getattr(fv, "visualize_channels", None)
    if fn is None:
        raise NotMeasured("robustlens.explain.featvis has no visualize_channels()")
    return fn(model, layer, chans, size=size, steps=p["steps"], seed=p["seed"])


def _hf_share(imgs) -> float:
    import torch

    x = imgs.float() - imgs.float().mean(dim=(2, 3), keepdim=True)
    h, w = x.shape[-2:]
    spec = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1)).abs() ** 2
    fy = torch.fft.fftshift(torch.fft.fftfreq(h)).view(-1, 1)
    fx = torch.fft.fftshift(torch.fft.fftfreq(w)).view(1, -1)
    high = ((fy**2 + fx**2).sqrt() > 0.25).float()
    return float(((spec * high).sum() / spec.sum().clamp_min(1e-12)))


# ----------------------------------------------------------------------------- sanity


def stage_sanity(ctx: StageContext) -> dict:
    """Cascading parameter randomisation (Adebayo et al. 2018; main App. A) on random, STD and
    ADV models: similarity of each map to the original as layers are randomised top down."""
    san = require("robustlens.explain.sanity", "sanity checks")
    p = ctx.params
    spec = _spec(ctx)
    sub = eval_subset(ctx.shared, p["n"])
    device = _device(ctx)
    x, y = sub.float(device=device), sub.labels.to(device)
    models = {n: load_model(ctx, n) for n in analysis_models(spec)}
    if p.get("random_model", True):
        models["random"] = _random_model(ctx)
    orders = ["top_down"] + (["independent"] if p["independent"] else [])
    curves: dict[str, dict] = {}
    figures, captions = {}, {}
    for order in orders:
        for method in p["methods"]:
            opts = _method_opts(method, {}, _seed(ctx, "sanity"))
            opts.pop("generator", None)
            raw = san.sanity_curves(models, x, y, methods=[method], order=order, seed=_seed(ctx, "sanity"), **opts)
            for n, per in raw.items():
                for meth, r in per.items():
                    key = meth if order == "top_down" else f"{meth} ({order})"
                    curves.setdefault(n, {})[key] = {"layers": list(r["layers"]),
                                                     **{m: list(v["mean"]) for m, v in r["metrics"].items()}}
        f = f"sanity_{order}.png"
        figures[f"curves_{order}"] = _plot_sanity({n: {k: v for k, v in per.items() if (order == "top_down") == ("(" not in k)}
                                                   for n, per in curves.items()}, ctx.out / f)
        captions[f"curves_{order}"] = (f"{order.replace('_', '-')} randomisation: similarity of the map to the original "
                                       "after each layer is randomised (left: first = original).")
    return {"n": len(sub), "methods": p["methods"], "orders": orders, "curves": curves, "figures": figures,
            "summary": "Similarity between the saliency map of the trained model and that of the model with its layers "
                       "randomised one after another (Spearman rank correlation of |map| and of the signed map, SSIM, HOG); "
                       "1 = unchanged, 0 = unrelated. A method that passes the check loses similarity as layers are randomised.",
            "captions": captions}


def _plot_sanity(curves: dict, path: Path) -> str:
    plt = _plt()
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
    return _save(fig, path)


# ----------------------------------------------------------------------------- localisation


def stage_localisation(ctx: StageContext) -> dict:
    """Weak localisation from saliency: box IoU >= 0.5 accuracy and pointing game (Aggarwal et al.)."""
    loc = require("robustlens.explain.localize", "localisation")
    p = ctx.params
    spec = _spec(ctx)
    sub = eval_subset(ctx.shared, p["n"])
    if sub.boxes is None:
        raise NotMeasured("localisation needs ground-truth boxes (the procedural set has them)")
    fn = getattr(loc, "evaluate_localization", None) or getattr(loc, "evaluate_localisation", None)
    if fn is None:
        raise NotMeasured("robustlens.explain.localize has no evaluate_localization()")
    out = {}
    for n in analysis_models(spec):
        r = fn(load_model(ctx, n), sub, method=p["method"], device=_device(ctx))
        out[n] = {k: v for k, v in dict(r).items() if isinstance(v, (int, float, str, list))}
    return {"n": len(sub), "method": p["method"], "models": out, "figures": {}}


# ----------------------------------------------------------------------------- generation


def stage_generation(ctx: StageContext) -> dict:
    """Large-eps targeted L2 PGD towards each class; the share an independent judge assigns to
    the target (perceptually aligned gradients; Santurkar et al. 2019, Aggarwal et al.)."""
    gen = require("robustlens.explain.generate", "generation")
    fn = getattr(gen, "generate", None)
    if fn is None:
        raise NotMeasured("robustlens.explain.generate has no generate()")
    p = ctx.params
    if not p["judge"]:
        raise NotMeasured("generation needs an independent judge model: set stages.generation.judge to a model of [models]")
    judge = load_model(ctx, p["judge"])
    sub = eval_subset(ctx.shared, p["n"])
    k = sub.num_classes
    import torch

    targets = (sub.labels + 1 + torch.arange(len(sub)) % max(1, k - 1)) % k
    out, figures = {}, {}
    from robustlens.explain.render import image_grid

    for n in ("std", "adv"):
        m = load_model(ctx, n)
        x = fn(m, sub.float(device=_device(ctx)), targets.to(_device(ctx)), eps=p["eps"] if p["eps"] > 0 else None,
               steps=p["steps"])
        with torch.no_grad():
            self_hit = float((m(x).argmax(1).cpu() == targets).float().mean())
            judge_hit = float((judge(x).argmax(1).cpu() == targets).float().mean())
            judge_start = float((judge(sub.float(device=_device(ctx))).argmax(1).cpu() == targets).float().mean())
        out[n] = {"target_success": self_hit, "judge_agreement": judge_hit, "judge_start_rate": judge_start}
        f = f"generated_{n}.png"
        image_grid(x[:16].cpu(), ctx.out / f, ncol=8, labels=[sub.classes[int(t)] for t in targets[:16]], title=f"{n}: targeted L2 eps={p['eps']}")
        figures[f"generated_{n}"] = f
    rows = [[n, o["target_success"], o["judge_agreement"], o["judge_start_rate"]] for n, o in out.items()]
    return {"n": len(sub), "eps": p["eps"], "steps": p["steps"], "judge": p["judge"], "models": out, "figures": figures,
            "summary": f"Targeted L2 PGD (eps {p['eps'] if p['eps'] > 0 else 'module default'}, {p['steps']} steps) from test images "
                       f"towards another class; the judge ({p['judge']}, trained independently) classifies the results.",
            "tables": {"generation": {"header": ["generator", "own model hits target", "judge says target", "judge before"],
                                      "rows": rows}}}


# ----------------------------------------------------------------------------- transfer / construct


def _strip_seconds(obj: Any) -> Any:
    """Drop wall-clock fields (results.json holds none: reruns must write identical files)."""
    if isinstance(obj, dict):
        return {k: _strip_seconds(v) for k, v in obj.items() if not _is_time_key(k)}
    if isinstance(obj, list):
        return [_strip_seconds(v) for v in obj]
    return obj


def _data_name(spec: Spec) -> str:
    src = spec.data.source
    base = src.split(":", 1)[0] if not Path(src).exists() else src
    return Path(base).name.split(".")[0] or base


def stage_transfer(ctx: StageContext) -> dict:
    """Late fusion of STD/ADV backbones (Itazuri et al. 2019, Sec. 4.2, Fig. 9) through
    :func:`robustlens.transfer.fusion.run_fusion_study`.

    Targets: the study's data set at each of ``sizes`` (:func:`load_target_splits`). Each
    variant concatenates the penultimate features of its backbones (``std+std`` / ``adv+adv``:
    the first and the second model of that kind, ``params["backbones"]``) into a new linear
    head, fine-tuned end to end (``linear_probe = false``, the paper's protocol) or trained on
    frozen features. One size at a time; a finished size is kept in the stage's work folder,
    so a killed stage resumes at the size it was in.
    """
    import copy
    import json

    from robustlens.io import write_json_atomic

    fus = require("robustlens.transfer.fusion", "transfer")
    p = ctx.params
    spec = _spec(ctx)
    device = _device(ctx)
    mode = "linear" if p["linear_probe"] else "finetune"
    lr = p["lr"] if p["lr"] > 0 else None
    seed = _seed(ctx, "transfer")
    kinds_needed = {k for v in p["variants"] for k in v.split("+")}
    backbones: dict[str, list] = {}
    for kind, names in p["backbones"].items():
        if kind not in kinds_needed:
            continue
        models = []
        for n in names:
            m = copy.deepcopy(load_model(ctx, n))  # the shared copy stays frozen for the other stages
            for q in m.parameters():
                q.requires_grad_(True)
            models.append(m)
        backbones[kind] = models
    name = _data_name(spec)
    ctx.work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    runs: list[dict] = []
    targets: list[dict] = []
    config: dict = {}
    for size in sorted(p["sizes"]):
        cache = ctx.work / f"size_{size}.json"
        if cache.exists():
            part = json.loads(cache.read_text())
        else:
            ctx.log(f"late fusion at {size}px ({mode}, {len(p['variants'])} variants x {p['repeats']} repeat(s))")
            splits = load_target_splits(ctx.shared, size, p["n_train"], p["n_test"], p["target_options"])
            target = fus.Target(name, splits["train"], splits["test"], source=spec.data.source)
            res = fus.run_fusion_study(backbones, [target], p["variants"], repeats=p["repeats"], mode=mode, epochs=p["epochs"],
                                       lr=lr, batch_size=p["batch_size"], seed=seed, device=device, show_progress=_tty())
            cfg = {k: v for k, v in res["config"].items() if k not in ("backbones", "targets", "device")}
            part = _strip_seconds({"config": cfg, "target": res["config"]["targets"][0], "table": res["table"], "runs": res["runs"]})
            write_json_atomic(cache, part)
        config = part["config"]
        rows.extend(part["table"])
        runs.extend(part["runs"])
        targets.append({k: v for k, v in part["target"].items() if k != "source"})
    sizes = sorted(p["sizes"])
    table = {str(s): {r["variant"]: r["mean"] for r in rows if r["resolution"] == s} for s in sizes}
    spread = {str(s): {r["variant"]: r["std"] for r in rows if r["resolution"] == s} for s in sizes}
    pattern = fus.paper_pattern(rows)
    fus.plot_fusion(rows, ctx.out / "fusion.png", title=f"late fusion on {name} ({'linear probe' if mode == 'linear' else 'fine-tuning'}, "
                                                        f"{config.get('epochs')} epochs, lr {config.get('lr')})")
    backbone_rows = []
    for kind, names in p["backbones"].items():
        if kind not in kinds_needed:
            continue
        for i, n in enumerate(names):
            tr = ctx.deps[f"train_{n}"].result
            backbone_rows.append([f"{kind}{i}", n, tr.get("source", ""), tr.get("config", {}).get("seed", spec.models[n].seed if n in spec.models else ""),
                                  tr.get("test_accuracy_1000")])
    cells = [[v.upper()] + [f"{100 * table[str(s)][v]:.1f} ± {100 * spread[str(s)][v]:.1f}" if v in table[str(s)] else "" for s in sizes]
             for v in p["variants"]]
    best = ", ".join(f"{k}: {e['best'].upper()}" for k, e in pattern["per_dataset"].items())
    return {
        "mode": mode, "epochs": config.get("epochs"), "lr": config.get("lr"), "batch_size": p["batch_size"],
        "repeats": p["repeats"], "seed": seed, "variants": list(p["variants"]), "sizes": sizes, "dataset": name,
        "backbones": {kind: list(names) for kind, names in p["backbones"].items() if kind in kinds_needed},
        "targets": targets, "table": table, "spread": spread, "rows": rows, "runs": runs, "pattern": pattern,
        "figures": {"fusion": "fusion.png"},
        "captions": {"fusion": "Test accuracy of each fusion variant on the study's data set at each resolution "
                               "(mean ± std over repeats), ordered by resolution, as in the main paper's Fig. 9."},
        "summary": f"Late fusion (main paper Sec. 4.2): new linear head on the concatenated penultimate features, "
                   f"{'trained on frozen backbones (linear probe)' if mode == 'linear' else 'fine-tuned end to end'} for "
                   f"{config.get('epochs')} epochs at lr {config.get('lr')} (SGD momentum 0.9), {p['repeats']} repeat(s) "
                   f"(head initialisation and batch order); targets: {name} at {', '.join(f'{s}px' for s in sizes)}. "
                   f"Best variant: {best}.",
        "tables": {
            "test accuracy (%), mean ± std over repeats": {"header": ["variant"] + [f"{s}px" for s in sizes], "rows": cells},
            "backbones": {"header": ["backbone", "model", "source", "seed", "own test accuracy"], "rows": backbone_rows},
        },
    }


def stage_construct(ctx: StageContext) -> dict:
    """Robust and non-robust data sets (Ilyas et al. 2019, Sec. 3) through
    :mod:`robustlens.transfer.construct`: D_R by inverting the ADV model's representation,
    D_det / D_rand by targeted L2 PGD on the STD model, relabelled with the target; a fresh
    standard model trained on each (and, with ``baseline``, on the original images) is
    evaluated on the original test set, clean and under PGD at the study's threat.

    Resumable: construction chunks and each finished training / evaluation are kept in the
    stage's work folder (everything is seeded, so a resumed stage gives the same numbers).
    """
    import json
    import shutil

    from robustlens.io import write_json_atomic
    from robustlens.models.checkpoint import save_checkpoint

    con = require("robustlens.transfer.construct", "constructed data sets")
    p = ctx.params
    device = _device(ctx)
    seed = _seed(ctx, "construct")
    data = load_data(ctx.shared)
    train, test = data["train"], data["test"]
    n = min(p["n"] or len(train), len(train))
    test_eval = test.sample(p["eval_n"] or len(test), seed=seed)
    std, adv = load_model(ctx, "std"), load_model(ctx, "adv")
    if p["arch"]:
        arch, arch_options = p["arch"], dict(p["arch_options"])
    else:
        arch = std.arch
        arch_options = {k: v for k, v in (getattr(std, "config", {}) or {}).items() if k != "num_classes"}
        arch_options.update(p["arch_options"])
    threat = p["threat"]
    ctx.work.mkdir(parents=True, exist_ok=True)
    kinds = (["original"] if p["baseline"] else []) + list(p["datasets"])
    datasets: dict[str, dict] = {}
    samples: dict[str, Any] = {}
    from robustlens.data.base import sample_indices

    chosen = sample_indices(len(train), n, seed, sort=True)  # the images construct_dataset uses
    x_orig = train.float(chosen)
    for kind in kinds:
        if kind == "original":
            cset = con.ConstructedSet.originals(train, chosen)
            construction: dict[str, Any] = {}
        else:
            source = adv if kind == "robust" else std
            kw: dict[str, Any] = dict(n=n, chunk_size=p["chunk_size"], seed=seed, device=device,
                                      show_progress=_tty())
            if kind == "robust":
                kw.update(steps=p["robust_steps"], step_size=p["robust_step_size"], init=p["robust_init"])
            else:
                kw.update(steps=p["steps"], step_size=p["step_size"], eps=p["eps"])
            ctx.log(f"constructing {_CONSTRUCT_NAMES[kind]} from {n} images")
            cset = con.construct_dataset(source, train, kind, out_dir=ctx.work / kind, **kw)
            construction = con.construction_stats(kind, source, cset, x_orig, device=device)
        samples[kind] = cset.images[:8]
        cache = ctx.work / f"eval_{kind}.json"
        if cache.exists():
            ev = json.loads(cache.read_text())
        else:
            ctx.log(f"training a fresh {arch} on {_CONSTRUCT_NAMES[kind]} ({p['epochs']} epochs) and evaluating it")
            r = con.train_and_evaluate(cset, test_eval, arch=arch, model_kwargs=arch_options, epochs=p["epochs"], lr=p["lr"],
                                       batch_size=p["batch_size"], augment=bool(p.get("augment", False)), threat_norm=threat["norm"], threat_eps=threat["eps"],
                                       attack_steps=p["attack_steps"], extra_threats=p.get("eval_threats", []), seed=seed, device=device,
                                       show_progress=_tty())
            ev = _strip_seconds({
                "clean_accuracy": r["test_clean_accuracy"], "robust_accuracy": r["test_robust_accuracy"],
                "extra_threats": r["extra_threats"],
                "train_accuracy_constructed_labels": r["train_accuracy_constructed_labels"],
                "train_agreement_with_original_labels": r["train_agreement_with_original_labels"],
                "n_train": r["n_train"], "n_test": r["n_test"], "attack": r["attack"], "last_epoch": r["last_epoch"],
            })
            # the fresh model is kept, so it can be attacked further (robustlens attack --checkpoint)
            save_checkpoint(ctx.work / f"model_{kind}.safetensors", r["model"],
                            {"classes": list(train.classes), "trained_on": _CONSTRUCT_NAMES[kind], "construct": ev})
            write_json_atomic(cache, ev)
        datasets[kind] = {**ev, "construction": construction}
    kept = {}
    models = {}
    for kind in kinds:
        src = ctx.work / f"model_{kind}.safetensors"
        if src.exists():
            (ctx.out / "models").mkdir(parents=True, exist_ok=True)
            for f in (src, src.with_suffix(".json")):
                shutil.move(str(f), str(ctx.out / "models" / f.name.removeprefix("model_")))
            models[kind] = f"models/{kind}.safetensors"
    if p.get("keep_datasets", True):
        # The constructed sets are the experiment's artefacts: move them out of the work folder
        # (deleted once the stage is done) into the stage folder. Read one back with
        # robustlens.transfer.construct.load_constructed(<stage folder>/datasets/<kind>).
        for kind in p["datasets"]:
            src, dst = ctx.work / kind, ctx.out / "datasets" / kind
            if (src / "data.npz").exists():
                dst.mkdir(parents=True, exist_ok=True)
                for f in ("data.npz", "construct.json"):
                    shutil.move(str(src / f), str(dst / f))
                kept[kind] = f"datasets/{kind}"
    chance = 1.0 / max(1, train.num_classes)
    figures = {"accuracy": con.plot_fresh_models({_CONSTRUCT_NAMES[k].split(" (")[0]: d for k, d in datasets.items()},
                                                 ctx.out / "construct_accuracy.png", threat, chance).name,
               "samples": _construct_samples(samples, x_orig[:8], ctx.out / "construct_samples.png")}
    extra_names = list(p.get("eval_threats", []))
    rows = [[_CONSTRUCT_NAMES[k], d["clean_accuracy"], d["robust_accuracy"],
             *[next((e["robust_accuracy"] for e in d.get("extra_threats", []) if e["threat"] == t), None) for t in extra_names],
             d["train_accuracy_constructed_labels"], d["train_agreement_with_original_labels"]] for k, d in datasets.items()]
    eps_txt = f"{threat['eps'] * 255:.3g}/255" if threat["norm"] == "linf" else f"{threat['eps']:.3g}"
    return {
        "n": n, "eval_n": len(test_eval), "chance": chance, "threat": threat, "attack_steps": p["attack_steps"],
        "files": kept,  # constructed sets kept in the stage folder (float32 data.npz + construct.json)
        "models": models,  # the fresh models, as checkpoints in the stage folder
        "settings": {"robust": {"source": "adv", "steps": p["robust_steps"], "step_size": p["robust_step_size"], "init": p["robust_init"]},
                     "det": {"source": "std", "eps": p["eps"], "steps": p["steps"], "step_size": p["step_size"]},
                     "rand": {"source": "std", "eps": p["eps"], "steps": p["steps"], "step_size": p["step_size"]}},
        "train": {"arch": arch, "arch_options": arch_options, "epochs": p["epochs"], "lr": p["lr"], "batch_size": p["batch_size"],
                  "augment": bool(p.get("augment", False)),
                  "seed": seed},
        "datasets": datasets,
        "figures": figures,
        "captions": {"accuracy": f"Fresh standard models trained on each set, evaluated on the original test set: clean and PGD-{p['attack_steps']} "
                                 f"({threat['norm']} eps {eps_txt}); dashed: chance.",
                     "samples": "Original training images (top) and what each construction made of them."},
        "summary": f"Ilyas et al. (2019): from {n} training images (a seeded sample), D_R inverts the ADV model's penultimate representation "
                   f"({p['robust_steps']} L2 steps of {p['robust_step_size']} from {'another training image' if p['robust_init'] == 'image' else 'noise'}); "
                   f"D_det / D_rand perturb towards y+1 / a random class on the STD model (targeted L2 PGD, eps {p['eps']}, {p['steps']} steps) "
                   f"and relabel with the target. A fresh {arch} is trained on each ({p['epochs']} epochs) and evaluated on {len(test_eval)} "
                   f"original test images; chance = {chance:.3g}.",
        "tables": {"fresh models on the original test set": {
            "header": ["trained on", "clean", f"PGD-{p['attack_steps']} {threat['norm']} {eps_txt}",
                       *[f"PGD-{p['attack_steps']} {t.replace(':', ' ')}" for t in extra_names], "train acc. (own labels)",
                       "train agreement with original labels"], "rows": rows}},
    }


_CONSTRUCT_NAMES = {"original": "D (original images)", "robust": "D_R (robust)", "det": "D_det (y+1)", "rand": "D_rand (random target)"}


def _construct_samples(samples: dict, originals, path: Path) -> str:
    import torch

    from robustlens.explain.render import image_grid

    k = len(originals)
    rows = [originals] + [samples[n][:k].float().clamp(0, 1) for n in samples if n != "original"]
    names = ["original"] + [n for n in samples if n != "original"]
    labels = [f"{names[r]}" if c == 0 else "" for r in range(len(rows)) for c in range(k)]
    image_grid(torch.cat(rows), path, ncol=k, labels=labels, title="rows: " + ", ".join(names))
    return path.name


# ----------------------------------------------------------------------------- the DAG


# Bumped whenever an analysis stage's output changes shape, so old cached folders are not reused.
STAGE_CODE = 4

_IMPL_FILES = {
    "robustness": ("attacks/evaluate.py", "attacks/pgd.py", "attacks/apgd.py"),
    "transforms": ("probes/evaluate.py",),
    "bias": ("probes/bias.py",),
    "neurons": ("probes/neurons.py",),
    "saliency": ("explain/saliency.py",),
    "featvis": ("explain/featvis.py",),
    "sanity": ("explain/sanity.py",),
    "localisation": ("explain/localize.py",),
    "generation": ("explain/generate.py",),
    "transfer": ("transfer/fusion.py",),
    "construct": ("transfer/construct.py",),
}


def implementations(stage: str) -> list[str]:
    """Which of the modules a stage can use are present (file checks, no imports): part of
    the stage's hash, so a stage reruns when a module it was missing becomes available."""
    import robustlens

    root = Path(robustlens.__file__).parent
    return [f for f in _IMPL_FILES.get(stage, ()) if (root / f).exists()]


def build_stages(spec: Spec) -> list[StageDef]:
    """The stage DAG for ``spec`` (disabled stages are left out)."""
    sd = dataclasses.asdict
    threat = {"norm": spec.threat.norm, "eps": parse_eps(spec.threat.eps, name="threat.eps")}
    data_params = {"data": sd(spec.data), "seed": spec.seed}
    stages = [StageDef("data", stage_data, data_params, (), "data")]
    st = spec.stages
    # a helper model (the generation judge, a named second transfer backbone) is trained only
    # when the stage that uses it runs
    needed_helpers = ({st.generation.judge} if st.generation.enabled else set()) | (
        set(transfer_second_models(spec).values()) if st.transfer.enabled else set())
    unused = {st.generation.judge, st.transfer.second_std, st.transfer.second_adv} - {"", "std", "adv"} - needed_helpers
    for name, m in spec.models.items():
        if name in unused:
            continue
        ms = sd(m)
        params: dict[str, Any] = {"model": name, "spec": ms, "threat_norm": spec.threat.norm,
                                  "eps": parse_eps(m.eps, name="eps") if m.eps != "" else threat["eps"]}
        if m.checkpoint:
            params["checkpoint_sha256"] = file_sha256(m.checkpoint)
        stages.append(StageDef(f"train_{name}", stage_train, params, ("data",)))
    seconds = transfer_second_models(spec) if st.transfer.enabled else {}
    extra_train: list[StageDef] = []  # added just before transfer, so the main analysis comes first
    for kind, name in seconds.items():
        if name in spec.models:
            continue
        # The second backbone of a kind, trained inside the study: the first one's recipe with
        # seed + 1, in its own cached (and resumable) train stage.
        base = spec.models[kind]
        ms = sd(dataclasses.replace(base, seed=int(base.seed) + 1))
        params = {"model": name, "spec": ms, "threat_norm": spec.threat.norm,
                  "eps": parse_eps(base.eps, name="eps") if base.eps != "" else threat["eps"]}
        extra_train.append(StageDef(f"train_{name}", stage_train, params, ("data",)))
    backbones = {kind: [kind] + ([seconds[kind]] if kind in seconds else []) for kind in ("std", "adv")}
    transfer_deps = ("data", *(f"train_{n}" for names in backbones.values() for n in names))
    analysed = tuple(f"train_{n}" for n in analysis_models(spec))
    deps = ("data", *analysed)
    table = [
        ("robustness", stage_robustness, {**sd(st.robustness), "threat": threat}, deps),
        ("transforms", stage_transforms, sd(st.transforms), deps),
        ("bias", stage_bias, sd(st.bias), deps),
        ("neurons", stage_neurons, sd(st.neurons), deps),
        ("saliency", stage_saliency, {**sd(st.saliency), "seed": spec.seed}, deps),
        ("featvis", stage_featvis, sd(st.featvis), deps),
        ("sanity", stage_sanity, {**sd(st.sanity), "seed": spec.seed}, deps),
        ("localisation", stage_localisation, sd(st.localisation), deps),
        ("generation", stage_generation, {**sd(st.generation), "seed": spec.seed},
         tuple(dict.fromkeys(("data", "train_std", "train_adv") + ((f"train_{st.generation.judge}",) if st.generation.judge else ())))),
        ("transfer", stage_transfer, {**sd(st.transfer), "seed": spec.seed, "backbones": backbones}, transfer_deps),
        ("construct", stage_construct, {**sd(st.construct), "seed": spec.seed, "threat": threat}, ("data", "train_std", "train_adv")),
    ]
    for name, fn, params, d in table:
        params = dict(params)
        if not params.pop("enabled", True):
            continue
        if name == "transfer":
            stages.extend(extra_train)
        params["implementations"] = implementations(name)
        params["stage_code"] = STAGE_CODE
        stages.append(StageDef(name, fn, params, tuple(d)))
    return stages

