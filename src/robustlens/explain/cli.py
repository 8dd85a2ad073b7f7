"""``robustlens explain``: saliency grids, feature visualisation, sanity checks, localisation, generation.

    robustlens explain --checkpoint std.safetensors --checkpoint adv.safetensors \\
        --data trifeature --split test --n 8 --methods vanilla,guided,smoothgrad,ig \\
        --featvis body.8:0,body.8:1 --sanity --localize --out explain_out

Writes into ``--out``: ``saliency.png`` (rows = images, columns = methods x models, plus a
randomly initialised copy of the first model with ``--random-model``), ``overlay.png``,
``filters_<model>.png``, ``featvis_<model>.png``, ``sanity.png``, ``generate.png`` and
``explain.json`` (config, versions, per-model results).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from robustlens.cli_common import (
    add_device_arg,
    add_format_size_args,
    add_overwrite_arg,
    add_seed_arg,
    check_out,
    checkpoint_names,
    load_model,
    positive_int,
    resolve_device,
)
from robustlens.errors import UserError
from robustlens.names import SALIENCY_METHODS

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", action="append", required=True, metavar="CKPT", help="model checkpoint (.safetensors + .json sidecar); repeat for STD, ADV, ...")
    p.add_argument("--name", action="append", default=None, metavar="NAME", help="column name per checkpoint (default: file stem)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="a folder of images (PNG/JPEG...) to explain")
    src.add_argument("--data", metavar="SOURCE", help="a data source: 'trifeature[:key=value,...]' or a folder / archive")
    p.add_argument("--split", default="test", help="split of --data (default test)")
    add_format_size_args(p)
    p.add_argument("--n", type=positive_int, default=8, help="number of images, a seeded sample of the split (default 8)")
    p.add_argument("--methods", default="vanilla,loss,guided,smoothgrad,ig", help=f"comma-separated, of: {','.join(SALIENCY_METHODS)} (default vanilla,loss,guided,smoothgrad,ig)")
    p.add_argument("--target", default=None, help="'label' (default with --data), 'predicted' (default with --images) or a class index")
    p.add_argument("--steps", type=positive_int, default=50, help="integrated-gradients steps (default 50)")
    p.add_argument("--samples", type=positive_int, default=50, help="SmoothGrad samples (default 50)")
    p.add_argument("--noise-level", type=float, default=0.2, help="SmoothGrad sigma as a fraction of max-min (default 0.2)")
    p.add_argument("--layer", default=None, help="Grad-CAM layer (default: the last conv)")
    p.add_argument("--display", choices=("signed", "abs", "rgb"), default="signed", help="display of the maps (default signed)")
    p.add_argument("--random-model", action="store_true", help="add a randomly initialised copy of the first model as a column")
    p.add_argument("--featvis", default=None, metavar="LAYER:CH,...", help="visualise these channels by gradient ascent (and the first-layer filters)")
    p.add_argument("--featvis-steps", type=positive_int, default=256, help="optimisation steps for --featvis (default 256)")
    p.add_argument("--featvis-size", type=positive_int, default=None, help="image side for --featvis (default: the data's)")
    p.add_argument("--sanity", action="store_true", help="cascading randomisation test per model (curves + JSON)")
    p.add_argument("--sanity-method", default=None, help="method for --sanity (default: the first of --methods)")
    p.add_argument("--localize", action="store_true", help="box accuracy and pointing game (needs a data set with boxes)")
    p.add_argument("--localize-method", default="gradcam", help="method for --localize (default gradcam)")
    p.add_argument("--localize-n", type=positive_int, default=256, help="images scored by --localize (default 256)")
    p.add_argument("--metrics", default=None, metavar="GROUPS",
                   help="faithfulness (deletion / insertion areas, ROAD, infidelity) and/or sensitivity (max-sensitivity, "
                        "local Lipschitz) of every --methods map per model, into explain.json (e.g. faithfulness,sensitivity)")
    p.add_argument("--judge", default=None, metavar="CKPT", help="independently trained model: generate towards random targets with every --checkpoint and report the judge's target rate")
    p.add_argument("--generate-steps", type=positive_int, default=60, help="targeted L2 PGD steps for --judge (default 60)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="internal batch size (default 64)")
    p.add_argument("--out", default="explain_out", help="output folder (default explain_out)")
    add_overwrite_arg(p, "an earlier explain.json and figures in --out")
    add_seed_arg(p)
    add_device_arg(p)


def _read_folder(folder: str, size: int | None, n: int) -> tuple[torch.Tensor, list[str]]:
    from PIL import Image

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"--images: {root} is not a folder")
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_EXTS)[:n]
    if not files:
        raise UserError(f"--images: no image files ({', '.join(IMAGE_EXTS)}) in {root}")
    imgs, target_size = [], None
    for f in files:
        try:
            im = Image.open(f).convert("RGB")
        except Exception as e:  # PIL raises many types for a bad file
            raise UserError(f"--images: cannot read {f} ({e})") from None
        target_size = target_size or ((size, size) if size else im.size)
        if im.size != target_size:
            im = im.resize(target_size, Image.BILINEAR)
        t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.size[1], im.size[0], 3)
        imgs.append(t.permute(2, 0, 1))
    return torch.stack(imgs).float() / 255.0, [f.name for f in files]


def _load_models(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, torch.nn.Module], dict[str, dict]]:
    """The ``--checkpoint`` models by display name, plus a seeded random copy of the first (``--random-model``)."""
    from robustlens.models.zoo import create

    models: dict[str, torch.nn.Module] = {}
    metas: dict[str, dict] = {}
    for name, ckpt in zip(checkpoint_names(args.checkpoint, args.name), args.checkpoint):
        models[name], metas[name] = load_model(ckpt, device)
    if args.random_model:
        meta0 = next(iter(metas.values()))
        torch.manual_seed(args.seed)
        rnd = create(meta0["arch"], meta0["num_classes"], **(meta0.get("model_kwargs") or {}))
        rnd.normalize.set(meta0["normalize"]["mean"], meta0["normalize"]["std"])
        models["random"] = rnd.to(device).eval()
    return models, metas


def _inputs(args: argparse.Namespace, device: torch.device):
    """``(imageset, sample, x, row labels)``: a seeded sample of ``--data`` or the ``--images`` files."""
    if not args.data:
        x, row_labels = _read_folder(args.images, args.size, args.n)
        return None, None, x.to(device), row_labels
    from robustlens.data import load

    imageset = load(args.data, split=args.split, size=args.size, format=args.format)
    if len(imageset) == 0:
        raise UserError(f"--data: split {args.split!r} of {args.data} is empty")
    sub = imageset.sample(args.n)
    return imageset, sub, sub.float(device=device), [sub.classes[int(c)] for c in sub.labels]


def _targets(args: argparse.Namespace, models: dict, x: torch.Tensor, sub, device) -> dict[str, torch.Tensor]:
    """The class explained per model: ``--target`` label, predicted or a class index."""
    from robustlens.explain.saliency import check_target

    target_arg = args.target or ("label" if sub is not None else "predicted")
    targets: dict[str, torch.Tensor] = {}
    for name, m in models.items():
        if target_arg == "label":
            if sub is None:
                raise UserError("--target label: --images has no labels; use 'predicted' or a class index")
            targets[name] = check_target(m, x, sub.labels.to(device))
        elif target_arg == "predicted":
            with torch.no_grad():
                targets[name] = m(x).argmax(1)
        else:
            try:
                cls = int(target_arg)
            except ValueError:
                raise UserError(f"--target: expected 'label', 'predicted' or a class index, got {target_arg!r}") from None
            targets[name] = check_target(m, x, cls)
    return targets


def _method_options(args: argparse.Namespace) -> dict[str, dict]:
    """The per-method options of the command line (IG steps, SmoothGrad samples and noise, Grad-CAM layer)."""
    return {
        "ig": {"steps": args.steps},
        "ig_path_average": {"steps": args.steps},
        "smoothgrad": {"n_samples": args.samples, "noise_level": args.noise_level},
        "gradcam": {"layer": args.layer} if args.layer else {},
    }


def _saliency(args, methods, models, x, targets, opts, row_labels, out: Path, results: dict, t0: float) -> None:
    """Every method on every model (SmoothGrad's noise seeded per model), the two grids and the map statistics."""
    from robustlens.explain import render
    from robustlens.explain.saliency import saliency

    maps: dict[str, torch.Tensor] = {}
    stats: dict[str, Any] = {}
    for meth in methods:
        for name, m in models.items():
            gen = torch.Generator(device=x.device).manual_seed(args.seed)
            kw = dict(opts.get(meth, {}))
            if meth == "smoothgrad":
                kw["generator"] = gen
            a = saliency(m, x, targets[name], meth, internal_batch_size=args.batch_size, **kw).detach().cpu()
            key = f"{meth} / {name}"
            maps[key] = a
            flat = a.flatten(1)
            stats[key] = {"mean_abs": flat.abs().mean(1).tolist(), "max_abs": flat.abs().amax(1).tolist()}
        print(f"explain: {meth} done ({time.time() - t0:.1f} s)")
    xs = x.detach().cpu()
    results["files"]["saliency"] = str(render.saliency_grid(xs, maps, out / "saliency.png", mode=args.display, row_labels=row_labels))
    results["files"]["overlay"] = str(render.saliency_grid(xs, maps, out / "overlay.png", mode="abs", row_labels=row_labels, overlay_maps=True))
    results["saliency"] = {"targets": {n: t.tolist() for n, t in targets.items()}, "stats": stats}


def _featvis(args, models, x, out: Path, results: dict) -> None:
    """First-layer filters and gradient-ascent visualisations of the ``--featvis`` channels, per model."""
    from robustlens.explain import featvis, render

    spec = featvis.parse_featvis_spec(args.featvis)
    size = args.featvis_size or int(x.shape[-1])
    results["featvis"] = {}
    for name, m in models.items():
        results["files"][f"filters_{name}"] = str(out / f"filters_{name}.png")
        featvis.filter_grid(m, out / f"filters_{name}.png", title=f"first-layer filters / {name}")
        imgs = []
        for layer in dict.fromkeys(lay for lay, _ in spec):
            chans = [c for lay, c in spec if lay == layer]
            imgs.append(featvis.visualize_channels(m, layer, chans, size=size, steps=args.featvis_steps, seed=args.seed, progress=True))
        grid = torch.cat(imgs)
        render.image_grid(grid, out / f"featvis_{name}.png", labels=[f"{lay}:{c}" for lay, c in spec], title=f"feature visualisation / {name}")
        results["files"][f"featvis_{name}"] = str(out / f"featvis_{name}.png")
        results["featvis"][name] = {"units": [f"{lay}:{c}" for lay, c in spec]}


def _sanity(args, methods, models, x, targets, opts, out: Path, results: dict) -> None:
    """The cascading randomisation test (Adebayo et al. 2018) of one method, per model."""
    from robustlens.explain import sanity
    from robustlens.explain.saliency import METHODS

    smeth = args.sanity_method or methods[0]
    if smeth not in METHODS:
        raise UserError(f"--sanity-method: unknown {smeth!r}; expected one of {', '.join(METHODS)}")
    res = {}
    for name, m in models.items():
        res[name] = {smeth: sanity.cascading_randomization(m, x, targets[name], smeth, seed=args.seed, internal_batch_size=args.batch_size, progress=True, **opts.get(smeth, {}))}
    sanity.plot_curves(res, out / "sanity.png")
    results["files"]["sanity"] = str(out / "sanity.png")
    results["sanity"] = res


def _localize(args, models, imageset, opts, device, results: dict) -> None:
    """Box accuracy and pointing game of ``--localize-method`` on a sample with boxes, and the centre-box baseline."""
    from robustlens.explain import localize

    if imageset is None:
        raise UserError("--localize: needs --data with ground-truth boxes (not --images)")
    lsub = imageset.sample(args.localize_n)
    results["localize"] = {
        name: localize.evaluate_localization(m, lsub, args.localize_method, batch_size=args.batch_size, device=device, **opts.get(args.localize_method, {}))
        for name, m in models.items()
    }
    results["localize_center_baseline"] = localize.center_box_baseline(lsub)


def _map_metrics(args, methods, models, x, targets, results: dict) -> None:
    """The ``--metrics`` groups of every method on every model (the study's faithfulness stage
    calls the same :func:`robustlens.explain.map_metrics.measure`)."""
    from robustlens.explain.map_metrics import MapMetricSettings, measure

    groups = args.metrics_groups
    settings = MapMetricSettings(batch_size=args.batch_size, smoothgrad_samples=args.samples, ig_steps=args.steps)
    out: dict[str, dict] = {}
    for name, m in models.items():
        for meth in methods:
            numbers, curves = measure(m, x, targets[name], meth, settings, seed=args.seed, groups=groups)
            out.setdefault(name, {})[meth] = {**numbers, "curves": curves} if curves else numbers
    results["metrics"] = {"groups": list(groups), "settings": {k: v for k, v in vars(settings).items()}, "models": out}


def _generate(args, models, x, sub, device, out: Path, results: dict) -> None:
    """Targeted generation with every model towards random targets, scored by the ``--judge``."""
    from robustlens.explain import generate, render

    judge, _ = load_model(args.judge, device, flag="--judge")
    g = torch.Generator().manual_seed(args.seed)
    first = next(iter(models.values()))
    labels = sub.labels if sub is not None else first(x).argmax(1).cpu()
    tgt = generate.random_targets(labels, judge.num_classes, g).to(device)
    pa = generate.perceptual_alignment(dict(models), judge, x, tgt, steps=args.generate_steps, internal_batch_size=args.batch_size)
    imgs = pa.pop("images")
    cols = {f"generated / {n}": v.cpu() for n, v in imgs.items()}
    grid = torch.stack([x.detach().cpu()] + list(cols.values()), 1).flatten(0, 1)
    render.image_grid(grid, out / "generate.png", ncol=1 + len(cols), labels=[""] * len(grid), title="start | " + " | ".join(cols))
    results["files"]["generate"] = str(out / "generate.png")
    results["generate"] = {"judge": args.judge, "targets": tgt.tolist(), **pa}


def run(args: argparse.Namespace) -> int:
    from robustlens.explain.saliency import METHODS
    from robustlens.io import versions, write_json_atomic

    t0 = time.time()
    device = resolve_device(args.device)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise UserError(f"--methods: unknown {bad or 'empty list'}; expected some of {', '.join(METHODS)}")
    if args.metrics is not None:
        from robustlens.explain.map_metrics import parse_groups

        args.metrics_groups = parse_groups(args.metrics)
    out = check_out(args.out, overwrite=args.overwrite, results=("explain.json",))
    out.mkdir(parents=True, exist_ok=True)
    models, _ = _load_models(args, device)
    imageset, sub, x, row_labels = _inputs(args, device)
    targets = _targets(args, models, x, sub, device)
    opts = _method_options(args)
    results: dict[str, Any] = {
        "command": "explain",
        "config": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "versions": versions(),
        "models": {n: {"checkpoint": (args.checkpoint + ["(random init)"])[i], "arch": m.arch} for i, (n, m) in enumerate(models.items())},
        "images": row_labels,
        "files": {},
    }
    _saliency(args, methods, models, x, targets, opts, row_labels, out, results, t0)
    if args.featvis:
        _featvis(args, models, x, out, results)
        print(f"explain: feature visualisation done ({time.time() - t0:.1f} s)")
    if args.sanity:
        _sanity(args, methods, models, x, targets, opts, out, results)
        print(f"explain: sanity checks done ({time.time() - t0:.1f} s)")
    if args.localize:
        _localize(args, models, imageset, opts, device, results)
        print(f"explain: localisation done ({time.time() - t0:.1f} s)")
    if args.metrics is not None:
        _map_metrics(args, methods, models, x, targets, results)
        print(f"explain: map metrics ({', '.join(args.metrics_groups)}) done ({time.time() - t0:.1f} s)")
    if args.judge:
        _generate(args, models, x, sub, device, out, results)
    results["seconds"] = time.time() - t0
    write_json_atomic(out / "explain.json", results)
    print(f"explain: wrote {out / 'explain.json'} and {len(results['files'])} figures in {out}")
    return 0
