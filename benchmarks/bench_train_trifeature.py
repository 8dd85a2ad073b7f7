"""Must-show for training on the embedded default (trifeature 32x32, label = shape, fine texture).

Trains STD and ADV (FGSM-RS, eps 8/255) with the trifeature/small_cnn defaults and reports
wall time, clean accuracy and PGD-20 accuracy (step 2.5 eps / 20, random start) on the test
split. Targets (issue 4): each run <= 90 s on 2 CPU cores; STD clean >= 0.97 and PGD-20
< 0.10; ADV clean >= 0.80 and PGD-20 >= 0.45.

    python benchmarks/bench_train_trifeature.py [--epochs E] [--lr LR] [--width W] [--data SOURCE]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from robustlens.data import load
from robustlens.models import create
from robustlens.threat import make_threat
from robustlens.train import ARCH_DEFAULTS, TrainConfig, train
from robustlens.train.loop import _pgd_accuracy


def evaluate(model, test, eps: float = 8 / 255, steps: int = 20) -> tuple[float, float]:
    try:
        from robustlens.attacks.evaluate import robust_accuracy
    except ImportError:
        robust_accuracy = None
    threat = make_threat("linf", eps)
    if robust_accuracy is not None:
        r = robust_accuracy(model, test, threat, attack="pgd", steps=steps, batch_size=500)
        return r["clean_accuracy"], r["robust_accuracy"]
    x, y = test.float(), test.labels
    return _pgd_accuracy(model, x, y, threat, steps, seed=1, batch=500, amp=False)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="trifeature")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--width", type=int, default=ARCH_DEFAULTS[("trifeature", "small_cnn")]["width"])
    p.add_argument("--modes", default="std,fgsm-rs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice, 2 here)")
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    train_set, test = load(a.data, split="train"), load(a.data, split="test")
    load1 = os.getloadavg()[0]
    rows = []
    for mode in a.modes.split(","):
        torch.manual_seed(a.seed)
        model = create("small_cnn", train_set.num_classes, width=a.width)
        cfg = TrainConfig(mode=mode, epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, seed=a.seed, progress=False)
        t, cpu = time.perf_counter(), time.process_time()
        result = train(model, train_set, cfg, device="cpu")
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        clean, robust = evaluate(model, test)
        rows.append({"mode": mode, "train_seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
                     "threads": torch.get_num_threads(), "clean": clean, "pgd20": robust,
                     "epochs": result.config.epochs, "lr": result.config.lr, "batch_size": result.config.batch_size,
                     "width": a.width, "load_before": load1, "load_after": os.getloadavg()[0]})
        print(json.dumps(rows[-1]), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
