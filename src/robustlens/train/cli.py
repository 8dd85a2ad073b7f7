"""``robustlens train``: standard or adversarial training from the command line.

    robustlens train --data trifeature --arch small_cnn --mode fgsm-rs --eps 8/255 --out runs/adv
    robustlens train --data ../shared/data/cifar10-jpeg.tar.gz --arch preact_resnet18 --mode fgsm-rs --out runs/c10
    robustlens train ... --out runs/adv --resume          # continue a killed run
    torchrun --nproc_per_node 2 -m robustlens.cli train ...   # DistributedDataParallel
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from robustlens.cli_common import add_data_args, add_device_arg, add_overwrite_arg, add_seed_arg, add_threat_args, check_out, positive_int
from robustlens.errors import UserError
from robustlens.train.config import CO_REMEDIES, MODES, SCHEDULES


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def configure(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    p.add_argument("--arch", default="small_cnn", help="architecture (see `robustlens models`; default small_cnn)")
    p.add_argument("--width", type=positive_int, default=None, help="small_cnn width (default: per data set)")
    p.add_argument("--mode", default="std", help="; ".join(f"{k}: {v}" for k, v in MODES.items()))
    add_threat_args(p, eps_default=None, eps_help="perturbation budget, e.g. 8/255 (default 8/255 for adversarial modes)")
    p.add_argument("--step-size", default=None, help="attack step (default: eps for fgsm, 1.25 eps fgsm-rs, 2.5 eps/k pgd/trades)")
    p.add_argument("--attack-steps", type=positive_int, default=10, help="k for pgd / trades (default 10)")
    p.add_argument("--beta", type=_fraction, default=6.0, help="TRADES beta (default 6)")
    p.add_argument("--adv-fraction", type=_fraction, default=1.0, help="fraction of each batch made adversarial (default 1)")
    p.add_argument("--epochs", type=positive_int, default=None, help="default: per data set")
    p.add_argument("--batch-size", type=positive_int, default=None, help="global batch size (default: per data set)")
    p.add_argument("--lr", type=_fraction, default=None, help="(peak) learning rate (default: per data set)")
    p.add_argument("--schedule", default=None, help="; ".join(f"{k}: {v}" for k, v in SCHEDULES.items()))
    p.add_argument("--milestones", default=None, help="step schedule: comma-separated epochs (default E/3, 2E/3)")
    p.add_argument("--gamma", type=_fraction, default=0.1, help="step schedule factor (default 0.1)")
    p.add_argument("--momentum", type=_fraction, default=0.9)
    p.add_argument("--weight-decay", type=_fraction, default=5e-4)
    p.add_argument("--no-decay-bn-bias", action="store_true", help="no weight decay on biases and norm parameters")
    p.add_argument("--label-smoothing", type=_fraction, default=0.0)
    aug = p.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=None, help="random crop (pad 4) + flip")
    aug.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--no-flip", dest="flip", action="store_false", default=None,
                   help="random crop without the horizontal flip (the default for 1-channel data: digits, text)")
    p.add_argument("--check-size", type=int, default=256, help="images in the per-epoch PGD check (0: off)")
    p.add_argument("--check-steps", type=positive_int, default=10, help="PGD steps of the check (default 10)")
    p.add_argument("--co-threshold", type=_fraction, default=0.2, help="absolute check PGD drop that flags catastrophic overfitting")
    p.add_argument("--co-ratio", type=_fraction, default=0.5, help="check PGD below this fraction of the best so far flags it")
    p.add_argument("--co-remedy", default=None, help="; ".join(f"{k}: {v}" for k, v in CO_REMEDIES.items()))
    p.add_argument("--grad-align", type=_fraction, default=0.0,
                   help="GradAlign lambda (Andriushchenko & Flammarion 2020; 0.2 at eps 8/255 on CIFAR-10; default off)")
    p.add_argument("--keep-last", action="store_true", help="leave the model at the last epoch (default for adversarial "
                   "modes: the epoch with the best check PGD accuracy)")
    es = p.add_mutually_exclusive_group()
    es.add_argument("--early-stop", dest="early_stop", action="store_true", default=None,
                    help="stop at catastrophic overfitting, keep the best weights (default for fgsm, fgsm-rs)")
    es.add_argument("--no-early-stop", dest="early_stop", action="store_false")
    p.add_argument("--val-split", default=None, help="use this split for the check instead of held-out training images")
    p.add_argument("--out", default=None, help="output folder (checkpoints, state, metrics.jsonl)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved state")
    add_overwrite_arg(p, "a run already in --out (its checkpoints, state and metrics.jsonl) by a fresh one")
    p.add_argument("--save-every", type=int, default=0, help="also save the training state every N steps")
    p.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs to OUT/tensorboard")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory format")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no epoch lines")
    add_seed_arg(p)
    add_device_arg(p)


# what a run leaves in --out: a folder holding one of them holds a run
RUN_FILES = ("state.safetensors", "last.safetensors", "best.safetensors", "metrics.jsonl")


def _check_out(args: argparse.Namespace) -> None:
    """Before the data is read: --out is writable and holds no run, unless --resume or --overwrite."""
    if args.resume and not args.out:
        raise UserError("--resume: needs --out (the folder of the run to continue)")
    if args.overwrite and (args.resume or not args.out):
        raise UserError("--overwrite: replaces the run in --out by a fresh one; it needs --out and excludes --resume")
    if args.out:
        check_out(args.out, overwrite=args.resume or args.overwrite, results=RUN_FILES, hint=" by a fresh run, --resume to continue it")


def run(args: argparse.Namespace) -> int:
    import torch

    from robustlens.data import load
    from robustlens.models import create
    from robustlens.train import ARCH_DEFAULTS, TrainConfig, train
    from robustlens.train.config import data_kind, normalize_mode

    mode = normalize_mode(args.mode)  # fail before loading data
    milestones = None
    if args.milestones:
        try:
            milestones = tuple(int(m) for m in args.milestones.split(",") if m.strip())
        except ValueError:
            raise UserError(f"--milestones: expected comma-separated epochs, got {args.milestones!r}") from None
    cfg = TrainConfig(
        mode=mode, threat=args.threat, eps=args.eps, step_size=args.step_size, attack_steps=args.attack_steps,
        trades_beta=args.beta, adv_fraction=args.adv_fraction, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, schedule=args.schedule, milestones=milestones, gamma=args.gamma, momentum=args.momentum,
        weight_decay=args.weight_decay, no_decay_bn_bias=args.no_decay_bn_bias, label_smoothing=args.label_smoothing,
        augment=args.augment, seed=args.seed, check_size=args.check_size, check_steps=args.check_steps,
        co_threshold=args.co_threshold, co_ratio=args.co_ratio, co_remedy=args.co_remedy, grad_align=args.grad_align,
        keep_best=False if args.keep_last else None, flip=args.flip, early_stop=args.early_stop, channels_last=False if args.no_channels_last else None,
        amp=False if args.no_amp else None, compile=args.compile, save_every=args.save_every,
        tensorboard=args.tensorboard, progress=not args.quiet, log=not args.quiet,
    )
    _check_out(args)
    # Validate the config (arch too) before the data is read.
    from robustlens.models import available

    if args.arch not in available():
        create(args.arch, 10)  # raises the UserError listing the architectures
    opts = {"format": args.format} if args.format else {}
    train_set = load(args.data, split="train", size=args.size, **opts)
    val_set = load(args.data, split=args.val_split, size=args.size, **opts) if args.val_split else None
    kind = data_kind(train_set.name or args.data, train_set.resolution, train_set.channels)
    kw = dict(ARCH_DEFAULTS.get((kind, args.arch), {}))
    if train_set.channels != 3:
        kw["in_channels"] = train_set.channels
    if args.width is not None:
        kw["width"] = args.width
    torch.manual_seed(args.seed)
    model = create(args.arch, train_set.num_classes, **kw)
    if args.overwrite:  # a fresh run: the old one's state and metrics must not mix in
        for f in ("state.safetensors", "metrics.jsonl"):
            (Path(args.out) / f).unlink(missing_ok=True)
    result = train(model, train_set, cfg, out_dir=args.out, val_set=val_set, resume=args.resume, device=args.device)
    summary = {k: result.final.get(k) for k in ("epoch", "loss", "train_accuracy", "check_clean_accuracy", "check_robust_accuracy")}
    summary.update(seconds=round(result.seconds, 2), best_epoch=result.best_epoch,
                   catastrophic_overfitting=result.catastrophic_overfitting, co_fallback=result.co_fallback,
                   selected_epoch=result.selected_epoch, not_robust=result.not_robust, stopped_early=result.stopped_early,
                   out=str(args.out) if args.out else None)
    print(json.dumps(summary), file=sys.stdout)
    return 0
