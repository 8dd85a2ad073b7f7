"""CIFAR-10 JPEG archive: first load (decode) and cached load times, with the counts checked.

    python benchmarks/bench_data_cifar.py [--archive ../shared/data/cifar10-jpeg.tar.gz] [--runs 5]

Targets (issue 2): 60,000 images, 10 classes, 5,000 / 1,000 per class in train / test;
first load <= 60 s, from the cache <= 2 s. Uses a fresh temporary cache folder.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from robustlens.data import load_splits

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def _cpu() -> float:
    """CPU seconds of this process and its (finished) decoding workers."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--archive", default=str(DEFAULT))
    p.add_argument("--runs", type=int, default=5, help="cached loads to time")
    args = p.parse_args()
    load0 = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        c0 = _cpu()
        first = load_splits(args.archive, cache=cache)
        t_first = time.perf_counter() - t
        cpu_first = _cpu() - c0
        cached, lazy = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            again = load_splits(args.archive, cache=cache)
            lazy.append(time.perf_counter() - t)
            # materialise every page of the memory map, so that laziness is not mistaken for speed
            again = {k: s.subset(slice(None)) for k, s in again.items()}
            for s in again.values():
                s.images = s.images.clone()
            cached.append(time.perf_counter() - t)
        checksum = sum(int(s.images.sum(dtype=torch.int64)) for s in again.values())
        ok_counts = (
            len(first["train"]) == 50000 and len(first["test"]) == 10000
            and first["train"].class_counts() == [5000] * 10 and first["test"].class_counts() == [1000] * 10
        )
        same = all(torch.equal(first[k].images, again[k].images) for k in first)
        assert checksum == sum(int(s.images.sum(dtype=torch.int64)) for s in first.values())
    print(f"archive: {args.archive}")
    for k, s in first.items():
        print(f"  {k}: {len(s)} images, {s.num_classes} classes, per class {sorted(set(s.class_counts()))}, "
              f"{tuple(s.images.shape[1:])}")
    print(f"counts right: {ok_counts}; cached == decoded: {same}")
    print(f"load average before: {load0}")
    print(f"first load (decode + write cache): {t_first:.1f} s wall, {cpu_first:.1f} CPU-s "
          f"(= {cpu_first / (os.cpu_count() or 1):.1f} s on {os.cpu_count()} idle cores)")
    print(f"cached load, memory-mapped (median of {args.runs}): {statistics.median(lazy):.3f} s")
    print(f"cached load + copying every pixel into memory (median of {args.runs}): {statistics.median(cached):.3f} s "
          f"[{', '.join(f'{c:.3f}' for c in cached)}]")


if __name__ == "__main__":
    main()
