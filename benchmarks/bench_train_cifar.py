"""CIFAR-10 / PreActResNet-18 / FGSM-RS (fast AT, Wong et al. 2020) with the cifar defaults.

On a GPU: the full 15-epoch run, then clean and PGD-50 (10 restarts) accuracy on the test
split (targets: clean >= 0.80, PGD >= 0.43 at 8/255, wall time under 3 minutes).
On a CPU: ``--steps K`` training steps (one thread by default) and the time of one epoch
extrapolated from them (the whole run is far too slow there).

    python benchmarks/bench_train_cifar.py --steps 3                 # CPU extrapolation
    python benchmarks/bench_train_cifar.py --full --device cuda      # GPU must-show
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from robustlens.data import load_splits
from robustlens.models import create
from robustlens.train import TrainConfig, train

ARCHIVE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-jpeg.tar.gz")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=os.path.normpath(ARCHIVE))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--full", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.device == "cpu":
        torch.set_num_threads(a.threads)
    t = time.perf_counter()
    splits = load_splits(a.data, splits=["train", "test"])
    train_set, test = splits["train"], splits["test"]
    load_s = time.perf_counter() - t
    torch.manual_seed(0)
    model = create("preact_resnet18", train_set.num_classes)
    device = torch.device(a.device)
    if a.full:
        cfg = TrainConfig(mode="fgsm-rs", compile=a.compile, progress=True)
        t = time.perf_counter()
        result = train(model, train_set, cfg, out_dir=a.out, device=device)
        wall = time.perf_counter() - t
        from robustlens.attacks.evaluate import robust_accuracy
        from robustlens.threat import make_threat

        ev = robust_accuracy(model, test, make_threat("linf", 8 / 255), attack="pgd", steps=50, restarts=10,
                             batch_size=1000, device=device)
        out = {"wall_seconds": wall, "epochs": result.config.epochs, "batch_size": result.config.batch_size,
               "images_per_s_last_epoch": result.final.get("images_per_s"), "clean": ev["clean_accuracy"],
               "pgd50x10": ev["robust_accuracy"], "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"}
        print(json.dumps(out, indent=2))
        return
    cfg = TrainConfig(mode="fgsm-rs", epochs=1, check_size=0, progress=False)
    resolved = cfg.resolve("cifar", device.type)
    pick = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))[: resolved.batch_size * a.steps]
    subset = train_set.subset(pick)  # a random subset: archives are often sorted by class
    c0, t0 = time.process_time(), time.perf_counter()
    result = train(model, subset, cfg, device=device)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    steps_per_epoch = len(train_set) // resolved.batch_size
    out = {
        "archive_load_seconds": round(load_s, 1), "n_train": len(train_set), "batch_size": resolved.batch_size,
        "steps_timed": a.steps, "threads": torch.get_num_threads(),
        "cpu_seconds_per_step": cpu / a.steps, "wall_seconds_per_step": wall / a.steps,
        "epoch_cpu_seconds_extrapolated": cpu / a.steps * steps_per_epoch,
        "epoch_wall_seconds_extrapolated": wall / a.steps * steps_per_epoch,
        "images_per_s_cpu": resolved.batch_size * a.steps / cpu,
        "load_avg": os.getloadavg()[0], "loss": result.final["loss"],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
