"""``robustlens data SOURCE``: images per split and class, resolution, channels; sample grids.

    robustlens data trifeature:contrast=0.18 --out runs/data
    robustlens data ../shared/data/cifar10-jpeg.tar.gz --size 32

Writes ``OUT/samples_<split>.png`` (a grid of ``--n`` images spread over the classes) and
``OUT/data.json`` (the printed summary, the options and the library versions).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from robustlens.cli_common import add_format_size_args, positive_int
from robustlens.errors import UserError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE",
                   help="'trifeature' (options as trifeature:key=value,...) or a folder / archive / file")
    add_format_size_args(p)
    p.add_argument("--split", action="append", default=None, help="only this split (repeatable)")
    p.add_argument("--out", default="robustlens-data", help="folder for samples_<split>.png and data.json")
    p.add_argument("--n", type=positive_int, default=64, help="images per sample grid (default 64)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the decode-once cache")


def _table(summary: dict) -> str:
    lines = []
    for split, s in summary["splits"].items():
        h, w = s["resolution"]
        lines.append(f"{split}: {s['images']} images, {h}x{w}, {s['channels']} channel(s), "
                     f"{len(s['classes'])} classes")
        width = max(len(c) for c in s["classes"]) if s["classes"] else 0
        for c, n in zip(s["classes"], s["per_class"]):
            lines.append(f"  {c:<{width}}  {n}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from robustlens.data.grid import sample_grid
    from robustlens.data.source import load_splits
    from robustlens.io import versions, write_json_atomic

    t0 = time.perf_counter()
    sets = load_splits(args.source, size=args.size, format=args.format, cache=not args.no_cache,
                       splits=args.split)
    seconds = time.perf_counter() - t0
    if not sets:
        raise UserError(f"{args.source}: no splits found")
    out = Path(args.out)
    summary: dict = {"source": args.source, "format": args.format, "size": args.size,
                     "load_seconds": round(seconds, 3), "splits": {}}
    for split, s in sets.items():
        info = s.summary()
        if s.meta.get("options"):
            info["options"] = s.meta["options"]
        if len(s):
            grid = sample_grid(s, out / f"samples_{split}.png", n=args.n)
            info["samples"] = grid.name
        summary["splits"][split] = info
    summary["versions"] = versions()
    write_json_atomic(out / "data.json", summary)
    print(_table(summary))
    print(f"loaded in {seconds:.2f} s; wrote {out / 'data.json'} and samples_<split>.png")
    return 0
