"""``robustlens probe``: accuracy under transformations, cue-conflict bias and neuron analysis
for one or more checkpoints, side by side.

    robustlens probe --checkpoint std.safetensors --checkpoint adv.safetensors --name std --name adv \\
        --data trifeature --split test --probes blur,median,invert,stylize,bias,neurons --out runs/probe

Writes to ``--out``: ``probes.json`` / ``probes.csv`` (model, probe, level, top1, top5, n),
``curves.png`` (all probes), ``blur.png`` and ``median.png`` where those ran, ``bias.json`` /
``bias.csv``, ``neurons.json`` / ``neurons.csv`` / ``neurons.png``, ``stimuli.json`` / ``stimuli.csv``
(with ``--stimuli cue_conflict=DIR``: Geirhos et al.'s stimuli through ``--class-map``) and
``probe.json`` (config, versions, the file list and the headline numbers).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from robustlens.cli_common import (
    add_data_args,
    add_device_arg,
    add_overwrite_arg,
    add_seed_arg,
    check_out,
    checkpoint_names,
    load_model,
    positive_int,
    resolve_device,
)
from robustlens.errors import UserError

EXTRA = ("bias", "neurons")


def _floats(text: str) -> list[float]:
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one number")
    return vals


def configure(p: argparse.ArgumentParser) -> None:
    from robustlens.probes.transforms import PROBES

    p.add_argument("--checkpoint", action="append", required=True, metavar="PATH", help="a model checkpoint (repeat for several)")
    p.add_argument("--name", action="append", default=None, help="a display name per checkpoint (repeat, same order)")
    add_data_args(p, preprocessing=True)
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--probes", default=",".join(list(PROBES) + list(EXTRA)),
                   help=f"comma-separated: {', '.join(list(PROBES) + list(EXTRA))} (default: all)")
    p.add_argument("--out", default="runs/probe", help="output folder (default runs/probe)")
    add_overwrite_arg(p, "an earlier probe.json and figures in --out")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate N images only (a seeded sample of the split)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--blur-kernel", type=int, default=7, help="Gaussian kernel size (odd, default 7)")
    p.add_argument("--blur-sigmas", type=_floats, default=[0, 0.5, 1, 1.5, 2, 2.5, 3], help="sigma grid, e.g. 0,0.5,1")
    p.add_argument("--median-kernel", type=int, default=3, help="median kernel size (odd, default 3)")
    p.add_argument("--median-repeats", type=int, default=10, help="apply the median filter 0..N times (default 10)")
    p.add_argument("--median-mode", default="nearest", help="border mode: nearest (default), reflect or mirror")
    p.add_argument("--fourier-mask", default="ideal", help="ideal (default) or gaussian")
    p.add_argument("--lowpass-radii", type=_floats, default=None, help="low-pass radii in units of Nyquist")
    p.add_argument("--highpass-radii", type=_floats, default=None, help="high-pass radii in units of Nyquist")
    p.add_argument("--stylize-method", default="fourier", help="fourier (weight-free, default) or adain")
    p.add_argument("--adain-encoder", default=None, metavar="PATH", help="AdaIN VGG encoder weights (vgg_normalised.pth)")
    p.add_argument("--adain-decoder", default=None, metavar="PATH", help="AdaIN decoder weights (decoder.pth)")
    p.add_argument("--style-data", default=None, metavar="SOURCE", help="style pool source (default: the evaluated images, other classes)")
    p.add_argument("--layers", default=None, help="comma-separated layer names for the neuron analysis (default: up to 4 ReLUs)")
    p.add_argument("--concept-z", type=float, default=1.0, help="a concept counts when its mean activation exceeds mean + z std")
    p.add_argument("--featvis", type=int, default=0, metavar="K",
                   help="also visualise the first K channels of each analysed layer (robustlens.explain.featvis) "
                        "and measure their smoothness (default 0: first-layer filters only)")
    p.add_argument("--featvis-steps", type=positive_int, default=128, help="gradient-ascent steps per visualisation")
    p.add_argument("--stimuli", action="append", default=None, metavar="KIND=PATH",
                   help="Geirhos et al.'s stimuli from disk (repeat): cue_conflict=DIR (<shape>/<shape><i>-<texture><j>.png), "
                        "silhouettes=DIR, edges=DIR (<class>/<class><i>.png); shape bias and accuracy per model")
    p.add_argument("--class-map", default="imagenet16", metavar="MAP",
                   help="stimulus categories onto the models' classes: imagenet16 (model-vs-human's 16 categories, default) "
                        "or category=class,... (members joined by '+', e.g. car=automobile,boat=ship)")
    add_device_arg(p)
    add_seed_arg(p)


def _build_probes(args, selected: list[str]):
    from robustlens.probes.transforms import get_probe

    out = []
    for name in selected:
        p = get_probe(name)
        if name == "blur":
            p = p.with_params(levels=args.blur_sigmas, kernel_size=args.blur_kernel)
        elif name == "median":
            if args.median_repeats < 0:
                raise UserError(f"--median-repeats: expected a non-negative integer, got {args.median_repeats}")
            p = p.with_params(levels=list(range(args.median_repeats + 1)), kernel_size=args.median_kernel, mode=args.median_mode)
        elif name == "lowpass":
            p = p.with_params(levels=args.lowpass_radii, mask=args.fourier_mask)
        elif name == "highpass":
            p = p.with_params(levels=args.highpass_radii, mask=args.fourier_mask)
        elif name == "stylize":
            p = p.with_params(method=args.stylize_method)
        out.append(p)
    # validate fixed parameters early (bad kernel sizes, sigmas, modes) with a clear message
    import torch

    x = torch.rand(1, 3, 8, 8)
    for p in out:
        if p.name in ("blur", "median", "lowpass", "highpass"):
            for lv in p.levels:
                p.apply(x, lv)
    return out


def _selected(args: argparse.Namespace) -> list[str]:
    """The ``--probes`` names, each a registered probe or one of :data:`EXTRA`."""
    from robustlens.probes.transforms import PROBES

    selected = [s.strip() for s in args.probes.split(",") if s.strip()]
    valid = list(PROBES) + list(EXTRA)
    bad = [s for s in selected if s not in valid]
    if bad or not selected:
        raise UserError(f"--probes: unknown probe {bad[0] if bad else '(none)'!r}; valid probes: {', '.join(valid)}")
    return selected


def _adain(args: argparse.Namespace, transforms: list, device):
    """The AdaIN networks when ``stylize`` runs with ``--stylize-method adain``, else ``None``."""
    if not (any(p.name == "stylize" for p in transforms) and args.stylize_method == "adain"):
        return None
    from robustlens.probes.adain import AdaIN

    return AdaIN.from_files(args.adain_encoder, args.adain_decoder, device)


def _transforms(args, models: dict, data, transforms: list, adain, device, out: Path, result: dict) -> None:
    """Accuracy of every model under every transformation probe: tables and curves."""
    from robustlens.data import load
    from robustlens.probes.evaluate import evaluate_probes, plot_curves, write_table

    pool = pool_labels = None
    if args.style_data:
        sd = load(args.style_data, split="train", size=data.resolution[0])
        pool, pool_labels = sd.images, None
    rows = evaluate_probes(models, data, transforms, batch_size=args.batch_size, device=device,
                           style_pool=pool, pool_labels=pool_labels, adain=adain, seed=args.seed)
    j, c = write_table(rows, out / "probes")
    result["files"].update({"probes_json": j.name, "probes_csv": c.name})
    result["files"]["curves"] = plot_curves(rows, out / "curves.png").name
    for pname in ("blur", "median"):
        if any(p.name == pname for p in transforms):
            result["files"][pname] = plot_curves(rows, out / f"{pname}.png", probes=[pname]).name
    result["probes"] = rows


def _conflict_split(args):
    """The procedural set's cue-conflict split (a ``--limit`` sample), loaded again from ``--data``."""
    from robustlens.data import load

    conflict = load(args.data, split="conflict", size=args.size)
    return conflict.sample(args.limit) if args.limit else conflict


def _bias(args, models: dict, data, device, out: Path, result: dict) -> None:
    """Shape vs texture bias on the cue-conflict split (Geirhos et al. 2019), per model."""
    from robustlens.data.source import is_procedural
    from robustlens.probes.bias import model_bias
    from robustlens.probes.evaluate import write_table

    if data.factors is not None and {"shape", "texture"} <= set(data.factor_names) and args.split == "conflict":
        conflict = data
    elif is_procedural(args.data):
        conflict = _conflict_split(args)
    else:
        raise UserError("--probes bias: needs the procedural set's 'conflict' split (--data trifeature...)")
    bias = [{"model": n, **model_bias(m, conflict, args.batch_size, device)} for n, m in models.items()]
    write_table(bias, out / "bias")
    result["files"].update({"bias_json": "bias.json", "bias_csv": "bias.csv"})
    result["bias"] = bias


def _stimulus_args(args) -> tuple[dict[str, str], str | dict]:
    """``--stimuli KIND=PATH`` as ``{kind: path}`` and ``--class-map`` as a map spec."""
    from robustlens.data.stimuli import KINDS

    sets: dict[str, str] = {}
    for item in args.stimuli:
        kind, eq, path = item.partition("=")
        if not eq or kind not in KINDS or kind in sets or not path:
            raise UserError(f"--stimuli {item!r}: expected KIND=PATH with KIND one of {', '.join(KINDS)}, each once")
        sets[kind] = path
    if args.class_map == "imagenet16":
        return sets, "imagenet16"
    table = {}
    for item in args.class_map.split(","):
        cat, eq, members = item.partition("=")
        if not eq or not cat.strip() or not members.strip():
            raise UserError(f"--class-map: {item!r} is not category=class (or imagenet16)")
        table[cat.strip()] = [m.strip() for m in members.split("+")]
    return sets, table


def _check_stimuli(args, data):
    """``(sets, class map)`` of ``--stimuli`` / ``--class-map``, checked before anything is
    written: every folder's layout, and the map against the classes of ``--data``."""
    from robustlens.data.stimuli import scan_stimuli
    from robustlens.probes.stimuli import class_map

    sets, spec = _stimulus_args(args)
    for kind, path in sets.items():
        scan_stimuli(path, kind)
    return sets, class_map(spec, list(data.classes), "--class-map")


def _stimuli(args, models: dict, stimuli, data, device, out: Path, result: dict) -> None:
    """Shape bias and texture-less accuracy on Geirhos's stimuli (:mod:`robustlens.probes.stimuli`),
    the models answering in the classes of ``--data``."""
    from robustlens.data.stimuli import read_stimuli
    from robustlens.probes.evaluate import write_table
    from robustlens.probes.stimuli import evaluate_stimuli

    sets, cmap = stimuli
    images = {kind: read_stimuli(path, kind, size=data.resolution[0]) for kind, path in sets.items()}
    measured = evaluate_stimuli(models, images, cmap, args.batch_size, device)
    rows = [{"model": n, "set": k, **{key: v for key, v in r.items() if not isinstance(v, dict)}}
            for n, per in measured.items() for k, r in per.items()]
    write_table(rows, out / "stimuli")
    result["files"].update({"stimuli_json": "stimuli.json", "stimuli_csv": "stimuli.csv"})
    result["stimuli"] = rows


def _visualisations(args, m, layers, data) -> dict | None:
    """Gradient-ascent visualisations of the first ``--featvis`` channels of each analysed layer."""
    if args.featvis <= 0:
        return None
    from robustlens.explain.featvis import visualize_channels
    from robustlens.probes.neurons import default_layers, get_layer

    vis = {}
    for layer in layers or default_layers(m):
        mod = get_layer(m, layer)
        width = getattr(mod, "out_channels", None) or getattr(mod, "num_features", None) or args.featvis
        chans = list(range(min(args.featvis, int(width))))
        vis[layer] = visualize_channels(m, layer, chans, size=data.resolution[0], steps=args.featvis_steps,
                                        seed=args.seed, in_channels=data.channels)
    return vis


def _neurons(args, models: dict, data, device, out: Path, result: dict) -> None:
    """Neuron analysis (Chen et al. 2020): concepts per unit and simplicity, per model and layer."""
    from robustlens.data.source import is_procedural
    from robustlens.io import write_json_atomic
    from robustlens.probes.evaluate import write_table
    from robustlens.probes.neurons import analyse_model, compare_summary, plot_neurons

    layers = [s.strip() for s in args.layers.split(",")] if args.layers else None
    ndata = data if data.factors is not None and data.factor_names else None
    if is_procedural(args.data) and args.split != "conflict":
        # train/test splits tie texture to shape; the conflict split varies the factors independently
        ndata = _conflict_split(args)
    res = {}
    for n, m in models.items():
        vis = _visualisations(args, m, layers, data)
        res[n] = analyse_model(m, ndata, layers, args.batch_size, device, visualisations=vis, z=args.concept_z)
    write_json_atomic(out / "neurons.json", res)
    summary = compare_summary(res)
    write_table(summary, out / "neurons_summary")
    result["files"].update({"neurons_json": "neurons.json", "neurons_summary": "neurons_summary.csv",
                            "neurons_png": plot_neurons(res, out / "neurons.png").name})
    result["neurons"] = summary


def run(args: argparse.Namespace) -> int:
    from robustlens.data import load
    from robustlens.io import versions, write_json_atomic
    from robustlens.probes.transforms import PROBES

    t0 = time.time()
    out = check_out(args.out, overwrite=args.overwrite, results=("probe.json",))
    selected = _selected(args)
    device = resolve_device(args.device)
    names = checkpoint_names(args.checkpoint, args.name, numbered=True, hint="; give one per --checkpoint")
    transforms = _build_probes(args, [s for s in selected if s in PROBES])
    adain = _adain(args, transforms, device)
    models: dict[str, Any] = {}
    metas: dict[str, Any] = {}
    for name, ck in zip(names, args.checkpoint):
        models[name], metas[name] = load_model(ck, device)
    # the models' input channels decide how the images are decoded (a 1-channel model: greyscale)
    channels = {int(m.config.get("in_channels", 3)) for m in models.values()}
    if len(channels) > 1:
        raise UserError(f"--checkpoint: the models take different numbers of input channels ({sorted(channels)}); probe them separately")
    extra = {"channels": 1} if channels == {1} else {}
    data = load(args.data, split=args.split, size=args.size, format=args.format, preprocessing=args.preprocessing, **extra)
    if args.limit:
        data = data.sample(args.limit)
    stimuli = _check_stimuli(args, data) if args.stimuli else None
    # a probe that takes colour away is the identity on greyscale data: skipped, with the reason
    skipped = {p.name: why for p in transforms if (why := p.skip_reason(data.channels))}
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    transforms = [p for p in transforms if p.name not in skipped]
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": "probe",
        "config": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "models": {n: {"checkpoint": c, "arch": metas[n].get("arch")} for n, c in zip(names, args.checkpoint)},
        "data": {"source": str(args.data), "split": args.split, "images": len(data)},
        "versions": versions(),
        "files": {},
        "skipped": skipped,
    }
    if transforms:
        _transforms(args, models, data, transforms, adain, device, out, result)
    if "bias" in selected:
        _bias(args, models, data, device, out, result)
    if "neurons" in selected:
        _neurons(args, models, data, device, out, result)
    if stimuli is not None:
        _stimuli(args, models, stimuli, data, device, out, result)
    result["seconds"] = time.time() - t0
    write_json_atomic(out / "probe.json", result)
    print(f"robustlens probe: {len(models)} model(s), {len(data)} images, wrote {out}/probe.json")
    for r in result.get("bias", []):
        print(f"  {r['model']}: shape bias {r['shape_bias']:.3f}")
    for r in result.get("stimuli", []):
        value = f"shape bias {r['shape_bias']}" if r["set"] == "cue_conflict" else f"accuracy {r['accuracy']}"
        print(f"  {r['model']} on {r['set']} ({r['n']} images, {r['dropped']} outside the class map): {value}")
    return 0
