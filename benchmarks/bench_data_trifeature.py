"""Trifeature generation speed: images per second at 32x32 (median of several runs).

    python benchmarks/bench_data_trifeature.py [--n 10000] [--runs 7] [--size 32]

Target (issue 2): >= 10,000 images/s at 32x32 on 2 cores. Each run generates a fresh
``n``-image training split (factors, masks, boxes included); the first run warms up and is
not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from robustlens.data.trifeature import TrifeatureConfig, generate


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--size", type=int, default=32)
    args = p.parse_args()
    cfg = TrifeatureConfig(size=args.size, n_train=args.n)
    generate(cfg, "train", n=min(args.n, 1000))  # warm-up
    rates, cpu_rates = [], []
    load0 = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    for seed in range(args.runs):
        cfg = TrifeatureConfig(size=args.size, n_train=args.n, seed=seed)
        t, c = time.perf_counter(), time.process_time()
        s = generate(cfg, "train")
        rates.append(len(s) / (time.perf_counter() - t))
        cpu_rates.append(len(s) / (time.process_time() - c))
    print(f"trifeature {args.size}x{args.size}, {args.n} images/run, {args.runs} runs, "
          f"torch threads {torch.get_num_threads()}")
    print("runs (img/s): " + ", ".join(f"{r:,.0f}" for r in rates))
    print(f"load average before: {load0} (other processes share these {os.cpu_count()} cores)")
    print(f"median: {statistics.median(rates):,.0f} images/s wall-clock")
    print(f"median: {statistics.median(cpu_rates):,.0f} images per CPU-second (all threads of this process)")


if __name__ == "__main__":
    main()
