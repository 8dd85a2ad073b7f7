"""``robustlens construct``: robust / non-robust data sets (Ilyas et al. 2019), resumable.

    robustlens construct --kind robust --checkpoint adv.safetensors --data trifeature --n 2000 --out runs/d_r --train-eval
    robustlens construct --kind det --checkpoint std.safetensors --data trifeature --n 2000 --out runs/d_det --train-eval

Rerunning the same command continues an interrupted construction (finished chunks are kept).
``--train-eval`` then trains a fresh standard model on the constructed set and reports its
clean and PGD accuracy on the ORIGINAL test split, next to the source model's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from robustlens.cli_common import (
    add_data_args,
    add_device_arg,
    add_seed_arg,
    add_threat_args,
    check_out,
    load_model,
    match_classes,
    positive_float,
    positive_int,
    resolve_device,
)
from robustlens.errors import UserError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", required=True, choices=["robust", "det", "rand"], help="robust: invert an ADV model's representation; det / rand: targeted L2 perturbations of a STD model, relabelled")
    p.add_argument("--checkpoint", required=True, help="ADV checkpoint for robust, STD checkpoint for det / rand")
    add_data_args(p)
    p.add_argument("--split", default="train", help="split to construct from (default train); the test split is used for --train-eval")
    p.add_argument("--out", required=True, help="output folder (chunks/, data.npz, construct.json, results.json); "
                   "rerunning a command whose construction was interrupted continues it")
    p.add_argument("--n", type=positive_int, default=None, help="use N training images, a seeded sample (default all)")
    p.add_argument("--steps", type=positive_int, default=None, help="default 200 (robust) / 40 (det, rand); paper: 1000 / 100")
    p.add_argument("--step-size", type=positive_float, default=None, help="default 0.1 (the paper's)")
    p.add_argument("--eps", type=positive_float, default=None, help="L2 radius for det / rand (default 0.5, the paper's)")
    p.add_argument("--init", choices=["image", "noise"], default=None, help="robust: start from another random training image (paper) or uniform noise")
    p.add_argument("--chunk-size", type=positive_int, default=256, help="images per saved chunk (default 256)")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--train-eval", action="store_true", help="train a fresh standard model on the result and evaluate it on the original test set")
    p.add_argument("--epochs", type=positive_int, default=15, help="--train-eval epochs (default 15)")
    p.add_argument("--lr", type=positive_float, default=0.05, help="--train-eval peak lr (cosine; default 0.05)")
    add_threat_args(p, threat_flag="--eval-norm", threat_default="l2", threat_help="threat for the robust accuracy (default l2)",
                    eps_flag="--eval-eps", eps_default="0.25", eps_help="eps for the robust accuracy (default 0.25, Ilyas et al.'s L2 value)")
    p.add_argument("--eval-steps", type=positive_int, default=20, help="PGD steps for the robust accuracy (default 20)")
    p.add_argument("--eval-threat", action="append", default=[], metavar="NORM:EPS",
                   help="--train-eval: also PGD at this threat, e.g. linf:4/255 or l2:0.5 (repeat for a robustness curve)")
    p.add_argument("--baseline", action="store_true",
                   help="--train-eval: also train the same recipe on the same original images (D) and evaluate it alike")
    p.add_argument("--eval-n", type=positive_int, default=None, help="--train-eval on N test images, a seeded sample (default all)")
    p.add_argument("--augment", action="store_true", help="--train-eval with random crop (pad 4) + flip")
    add_device_arg(p)
    add_seed_arg(p)


def _check_args(args: argparse.Namespace) -> float:
    """Everything that can fail without work, before the long construction; the evaluation eps."""
    from robustlens.threat import parse_eps, parse_threat_spec

    if args.kind == "robust" and args.eps is not None:
        raise UserError("--eps: the robust data set is an unconstrained inversion; --eps applies to det / rand only")
    if (args.eval_threat or args.baseline) and not args.train_eval:
        raise UserError("--eval-threat / --baseline: they apply to the fresh models of --train-eval; add --train-eval")
    eval_eps = parse_eps(args.eval_eps, name="--eval-eps")  # bad values fail before the long construction
    for t in args.eval_threat:
        parse_threat_spec(t, name="--eval-threat")
    return eval_eps


def _check_model(args: argparse.Namespace, model, train) -> None:
    if train.num_classes != model.num_classes:
        raise UserError(f"--checkpoint {args.checkpoint}: a {model.num_classes}-class model, but --data {args.data} has {train.num_classes} classes")
    if train.channels != model.first_conv.in_channels:
        raise UserError(f"--checkpoint {args.checkpoint}: takes {model.first_conv.in_channels}-channel input, but --data {args.data} has {train.channels}")


def _fresh_model(args, key: str, data, test, threat, *, arch: str, kwargs: dict, classes: list, device) -> dict:
    """Train a fresh standard model on ``data``, evaluate it on the original ``test`` split, save it."""
    from robustlens.models.checkpoint import save_checkpoint
    from robustlens.transfer.construct import train_and_evaluate

    fname = {"trained_on_constructed": "trained.safetensors", "trained_on_original": "baseline.safetensors"}[key]
    ev = train_and_evaluate(data, test, arch=arch, model_kwargs=kwargs, epochs=args.epochs, lr=args.lr, augment=args.augment,
                            threat_norm=args.eval_norm, threat_eps=threat.eps, attack_steps=args.eval_steps,
                            extra_threats=list(args.eval_threat), seed=args.seed, device=device)
    fresh = ev.pop("model")
    path = save_checkpoint(Path(args.out) / fname, fresh, {"classes": classes, "trained_on": data.kind, "evaluation": ev})
    ev["checkpoint"] = str(path)
    curve = "".join(f", {e['threat']} {100 * e['robust_accuracy']:.1f}%" for e in ev["extra_threats"])
    print(
        f"{data.kind}: fresh model: clean {100 * ev['test_clean_accuracy']:.1f}%, "
        f"{args.eval_norm} eps {threat.eps:g} PGD-{args.eval_steps} {100 * ev['test_robust_accuracy']:.1f}%{curve} "
        f"on the original test set; saved to {path}"
    )
    return ev


def _train_eval(args, model, train, ds, eval_eps: float, opts: dict, device, result: dict) -> None:
    """``--train-eval``: the source model's and the fresh models' accuracy on the original test split, and the figure."""
    from robustlens.data import load
    from robustlens.threat import make_threat
    from robustlens.transfer._loops import robust_accuracy
    from robustlens.transfer.construct import ConstructedSet, plot_fresh_models

    test = load(args.data, split="test", size=args.size, **opts)
    if args.eval_n is not None:
        test = test.sample(args.eval_n, seed=args.seed)
    threat = make_threat(args.eval_norm, eval_eps)
    model.eval()
    src = robust_accuracy(model, test.float(), test.labels, threat, steps=args.eval_steps, device=device, seed=args.seed)
    arch = model.arch or "small_cnn"
    kwargs = {k: v for k, v in (model.config or {}).items() if k != "num_classes"}
    result["source_model"] = {"test_clean_accuracy": src["clean_accuracy"], "test_robust_accuracy": src["robust_accuracy"]}
    runs = {"trained_on_constructed": ds}
    if args.baseline:
        runs["trained_on_original"] = ConstructedSet.originals(train, ds.source_index)
    for key, data in runs.items():
        result[key] = _fresh_model(args, key, data, test, threat, arch=arch, kwargs=kwargs, classes=list(train.classes), device=device)
    print(f"source model: clean {100 * src['clean_accuracy']:.1f}%, PGD {100 * src['robust_accuracy']:.1f}%")
    labels = {"trained_on_constructed": {"robust": "D_R", "det": "D_det", "rand": "D_rand"}[args.kind], "trained_on_original": "D (original)"}
    fig = plot_fresh_models({labels[k]: {"clean_accuracy": result[k]["test_clean_accuracy"], "robust_accuracy": result[k]["test_robust_accuracy"],
                                         "extra_threats": result[k]["extra_threats"]} for k in labels if k in result},
                            Path(args.out) / "accuracy.png", {"norm": threat.norm, "eps": threat.eps}, 1.0 / train.num_classes)
    result["figure"] = fig.name


def run(args: argparse.Namespace) -> int:
    from robustlens.data import load
    from robustlens.io import versions, write_json_atomic
    from robustlens.transfer.construct import construct_dataset, construction_stats

    # writable before any work; a rerun continues (or re-evaluates) the construction in --out by
    # design, and construct.json refuses one with another configuration, so nothing is replaced
    check_out(args.out, overwrite=True)
    device = resolve_device(args.device)
    eval_eps = _check_args(args)
    model, meta = load_model(args.checkpoint, device)
    opts = {"format": args.format} if args.format else {}
    train = match_classes(load(args.data, split=args.split, size=args.size, **opts), meta, model.num_classes,
                          checkpoint=f"--checkpoint {args.checkpoint}")
    _check_model(args, model, train)
    ds = construct_dataset(
        model, train, args.kind, out_dir=args.out, n=args.n, steps=args.steps, step_size=args.step_size,
        eps=args.eps, init=args.init, chunk_size=args.chunk_size, batch_size=args.batch_size, seed=args.seed, device=device,
    )
    result: dict = {"construct": ds.meta.get("config", ds.meta), "checkpoint": str(args.checkpoint), "data": args.data, "n": len(ds)}
    # D_R: representation distance to the originals; D_det / D_rand: targeted success, L2 size
    result["construction"] = construction_stats(args.kind, model, ds, train.float(ds.source_index), device=device)
    if args.train_eval:
        _train_eval(args, model, train, ds, eval_eps, opts, device, result)
    result["versions"] = versions()
    write_json_atomic(Path(args.out) / "results.json", result)
    print(f"wrote {Path(args.out) / 'data.npz'} ({len(ds)} images, float32) and {Path(args.out) / 'results.json'}")
    return 0
