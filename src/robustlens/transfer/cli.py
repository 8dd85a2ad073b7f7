"""``robustlens transfer``: late fusion of STD / ADV backbones on target data sets.

    robustlens transfer --backbone std=std_s0.safetensors --backbone std=std_s1.safetensors \\
        --backbone adv=adv_s0.safetensors --backbone adv=adv_s1.safetensors \\
        --target trifeature:size=32 --target trifeature:size=64 --target trifeature:size=96 \\
        --variants std,adv,std+std,adv+adv,std+adv --repeats 3 --mode linear --out runs/fusion

Writes ``results.json``, ``table.csv``, ``table.md`` and ``fusion.png`` to ``--out``.
A target is a data source (see ``robustlens data``), optionally ``SOURCE@SIZE`` to resize on load.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from robustlens.cli_common import add_device_arg, add_overwrite_arg, add_seed_arg, check_out, nonneg_float, positive_float, positive_int, resolve_device
from robustlens.errors import UserError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", action="append", default=[], metavar="KIND=CKPT", help="a pre-trained checkpoint of kind std or adv (repeat; give a kind twice, different seeds, for std+std / adv+adv)")
    p.add_argument("--target", action="append", default=[], metavar="SOURCE[@SIZE]", help="target data set, e.g. trifeature:size=32 or cifar10.tar.gz@64 (repeat)")
    p.add_argument("--variants", default="std,adv,std+std,adv+adv,std+adv", help="comma-separated variants (default: all five)")
    p.add_argument("--repeats", type=positive_int, default=3, help="training runs per variant and target (default 3)")
    p.add_argument("--mode", choices=["linear", "finetune"], default="linear", help="linear probe on frozen backbones (fast) or full fine-tuning (the paper's protocol)")
    p.add_argument("--epochs", type=positive_int, default=None, help="default 30 (both modes)")
    p.add_argument("--lr", type=positive_float, default=None, help="default 0.001 (finetune, the paper) / 0.05 (linear, standardised features)")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--weight-decay", type=nonneg_float, default=5e-4)
    p.add_argument("--no-standardize", action="store_true", help="linear probe on raw (not z-scored) features")
    p.add_argument("--out", required=True, help="output folder")
    add_overwrite_arg(p, "an earlier results.json (and table, figure) in --out")
    add_device_arg(p)
    add_seed_arg(p)


def parse_backbones(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        kind, sep, path = item.partition("=")
        kind = kind.strip().lower()
        if not sep or not kind or not path or "+" in kind:
            raise UserError(f"--backbone {item!r}: expected KIND=CHECKPOINT, e.g. std=std_s0.safetensors")
        out.setdefault(kind, []).append(path)
    if not out:
        raise UserError("--backbone: no backbone given; expected e.g. --backbone std=A.safetensors --backbone adv=B.safetensors")
    return out


def parse_target(spec: str) -> tuple[str, int | None]:
    m = re.fullmatch(r"(.+)@(\d+)", spec.strip())
    if m:
        return m.group(1), int(m.group(2))
    if not spec.strip():
        raise UserError("--target: empty target")
    return spec.strip(), None


def run(args: argparse.Namespace) -> int:
    from robustlens.transfer.fusion import check_variants, parse_variants, run_fusion_study

    check_out(args.out, overwrite=args.overwrite, results=("results.json",))
    backbones = parse_backbones(args.backbone)
    variants = parse_variants(args.variants)
    check_variants(variants, {k: len(v) for k, v in backbones.items()})  # before loading anything
    if not args.target:
        raise UserError("--target: no target data set given; expected e.g. --target trifeature:size=32")
    targets = [parse_target(t) for t in args.target]
    device = resolve_device(args.device)
    res = run_fusion_study(
        backbones,
        targets,
        variants,
        repeats=args.repeats,
        mode=args.mode,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        standardize=not args.no_standardize,
        seed=args.seed,
        out_dir=args.out,
        device=device,
    )
    from robustlens.transfer.fusion import table_markdown

    print(table_markdown(res["table"]), end="")
    print(f"wrote {Path(args.out) / 'results.json'}, table.csv, table.md, fusion.png")
    return 0
