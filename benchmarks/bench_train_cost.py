"""Cost of an adversarial training epoch relative to a standard one, side by side.

One process, modes interleaved (std, fgsm-rs, pgd-k, std, ...), ``--repeats`` rounds,
medians. Each measurement is one training epoch of ``train()`` (the PGD check is off, so
it times the loop itself) on the first ``--n`` trifeature training images. Reports the
wall-clock ratio and the process-CPU-time ratio (with one thread the CPU time does not
depend on how loaded the shared machine is).

Targets (issue 4): FGSM-RS <= 2.15x STD (the floor is 2: one extra forward and backward),
PGD-k <= (k + 1) x 1.05.

    python benchmarks/bench_train_cost.py [--n 2048] [--k 3] [--repeats 3] [--threads 1] [--arch small_cnn]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from robustlens.data import load
from robustlens.models import create
from robustlens.train import TrainConfig, train


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="trifeature")
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--channels-last", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = load(a.data, split="train").head(a.n)
    modes = {"std": dict(mode="std"), "fgsm-rs": dict(mode="fgsm-rs"), f"pgd-{a.k}": dict(mode="pgd", attack_steps=a.k)}
    kw = {"width": a.width} if a.arch == "small_cnn" else {}
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    load_before = os.getloadavg()[0]
    for r in range(a.repeats + 1):  # round 0 warms up
        for name, extra in modes.items():
            torch.manual_seed(0)
            model = create(a.arch, data.num_classes, **kw)
            cfg = TrainConfig(epochs=1, batch_size=a.batch_size, lr=0.05, schedule="constant", check_size=0,
                              channels_last=bool(a.channels_last), log=False, progress=False, **extra)
            c0 = time.process_time()
            res = train(model, data, cfg, device="cpu")
            c1 = time.process_time() - c0
            if r > 0:
                wall[name].append(res.history[0]["seconds"])
                cpu[name].append(c1)
    med_w = {m: statistics.median(v) for m, v in wall.items()}
    med_c = {m: statistics.median(v) for m, v in cpu.items()}
    out = {
        "arch": a.arch, "n": a.n, "batch_size": a.batch_size, "threads": a.threads, "k": a.k,
        "epoch_seconds_median": med_w, "cpu_seconds_median": med_c,
        "ratio_wall": {m: med_w[m] / med_w["std"] for m in modes},
        "ratio_cpu": {m: med_c[m] / med_c["std"] for m in modes},
        "targets": {"fgsm-rs": 2.15, f"pgd-{a.k}": (a.k + 1) * 1.05},
        "load_before": load_before, "load_after": os.getloadavg()[0],
    }
    print(json.dumps(out, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
