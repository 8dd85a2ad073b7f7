"""``robustlens models``: list the architectures of the zoo."""

from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", action="store_true", help="also count parameters (builds each model)")


def run(args: argparse.Namespace) -> int:
    from robustlens.models import available, create

    for name, info in available().items():
        extra = ""
        if args.params:
            n = sum(p.numel() for p in create(name, 10).parameters())
            extra = f"  [{n / 1e6:.2f} M params]"
        print(f"{name:18s} {info}{extra}")
    return 0
