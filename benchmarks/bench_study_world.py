"""Explore the embedded world's design (issue 15): train STD and FGSM-RS (eps 8/255) on the
procedural set with given generator options, and print clean accuracy, PGD-20 accuracy and
cue-conflict shape bias for each, one JSON line per model.

    python benchmarks/bench_study_world.py --options contrast=0.05,label=texture,shape_corr=0.9 \
        [--epochs E] [--n-train N] [--seed S] [--threads T]

The targets of the default study (issue 15): STD clean >= 0.97, STD robust <= 0.05, ADV clean
>= 0.80 and >= 0.03 below STD, ADV robust >= 0.50, shape bias ADV - STD >= 0.30.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from robustlens.attacks.evaluate import robust_accuracy
from robustlens.data import load
from robustlens.models import create
from robustlens.probes.bias import model_bias
from robustlens.threat import make_threat
from robustlens.train import ARCH_DEFAULTS, TrainConfig, train


def _options(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--options", default="")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--n-train", type=int, default=0)
    p.add_argument("--n-eval", type=int, default=500)
    p.add_argument("--modes", default="std,fgsm-rs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    opts = _options(a.options)
    train_set = load("trifeature", split="train", **opts)
    if a.n_train:
        train_set = train_set.head(a.n_train)
    test = load("trifeature", split="test", **opts).head(a.n_eval)
    conflict = load("trifeature", split="conflict", **opts).head(a.n_eval)
    width = ARCH_DEFAULTS[("trifeature", "small_cnn")]["width"]
    for mode in a.modes.split(","):
        torch.manual_seed(a.seed)
        model = create("small_cnn", train_set.num_classes, width=width)
        t = time.perf_counter()
        train(model, train_set, TrainConfig(mode=mode, epochs=a.epochs, seed=a.seed, progress=False), device="cpu")
        seconds = time.perf_counter() - t
        r = robust_accuracy(model, test, make_threat("linf", 8 / 255), attack="pgd", steps=20, batch_size=500)
        bias = model_bias(model, conflict)["shape_bias"]
        print(json.dumps({"options": a.options, "mode": mode, "epochs": a.epochs, "n_train": len(train_set),
                          "seed": a.seed, "clean": round(r["clean_accuracy"], 4), "pgd20": round(r["robust_accuracy"], 4),
                          "shape_bias": round(bias, 4), "train_s": round(seconds, 1), "load": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
