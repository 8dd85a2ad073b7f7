"""FAB-T in the AutoAttack-style ensemble: robust accuracy and time with and without it.

Trains small_cnn (width 8) on the procedural trifeature set for a few epochs (STD and
FGSM-RS adversarial training), then on a seeded sample of the test split measures, at
L-inf eps 8/255 with the full budgets (100 iterations, 9 target classes, 5,000 Square
queries): the ensemble without FAB-T (apgd-ce, apgd-t, square) and with it (the standard
apgd-ce, apgd-t, fab-t, square), per-member robust accuracy, seconds and their ratio; and,
for context, APGD-T and FAB-T alone (FAB-T alone: the full minimum-norm search, so its mean
norm of the fooled points is the mean smallest adversarial found within eps). Everything in
one process, one torch thread, the variants run one after the other on the same points.

    python benchmarks/bench_attacks_fab.py [--n 200] [--epochs 3] [--modes std,fgsm-rs] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from robustlens.attacks import robust_accuracy
from robustlens.data import load
from robustlens.models import create
from robustlens.threat import make_threat
from robustlens.train import TrainConfig, train

WITHOUT = ("apgd-ce", "apgd-t", "square")
WITH = ("apgd-ce", "apgd-t", "fab-t", "square")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="trifeature")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--modes", default="std,fgsm-rs")
    p.add_argument("--eps", default="8/255")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--queries", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    train_set = load(a.data, split="train")
    test = load(a.data, split="test").sample(a.n, seed=a.seed)
    threat = make_threat("linf", a.eps)
    rows = []
    for mode in a.modes.split(","):
        torch.manual_seed(a.seed)
        model = create("small_cnn", train_set.num_classes, width=a.width)
        train(model, train_set, TrainConfig(mode=mode, epochs=a.epochs, seed=a.seed, progress=False, log=False))
        model.eval()
        kw = dict(batch_size=a.n, seed=a.seed, progress=False, checks_enabled=False, steps=a.steps)
        res = {}
        for name, members in (("without", WITHOUT), ("with", WITH)):
            res[name] = robust_accuracy(model, test, threat, attack="autoattack", attacks=members, n_queries=a.queries, **kw)
        for name in ("apgd-t", "fab-t"):
            res[name] = robust_accuracy(model, test, threat, attack=name, **kw)
        row = {
            "mode": mode,
            "clean": res["with"]["clean_accuracy"],
            "without": res["without"]["robust_accuracy"],
            "with": res["with"]["robust_accuracy"],
            "per_attack_with": res["with"]["per_attack"],
            "seconds_without": res["without"]["seconds"],
            "seconds_with": res["with"]["seconds"],
            "time_ratio": res["with"]["seconds"] / max(res["without"]["seconds"], 1e-9),
            "apgd_t_alone": res["apgd-t"]["robust_accuracy"],
            "apgd_t_seconds": res["apgd-t"]["seconds"],
            "fab_t_alone": res["fab-t"]["robust_accuracy"],
            "fab_t_seconds": res["fab-t"]["seconds"],
            "fab_t_mean_norm_fooled": res["fab-t"]["mean_norm_fooled"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f}; n={a.n}, linf eps={a.eps}, steps={a.steps}, queries={a.queries}, {a.epochs} epochs, width {a.width}")
    print("| model | clean | ensemble w/o FAB-T | ensemble with FAB-T | after each member (with) | s w/o | s with | time ratio | APGD-T alone | FAB-T alone | s APGD-T | s FAB-T |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        seq = ", ".join(f"{k} {100 * v:.1f}" for k, v in r["per_attack_with"].items())
        print(
            f"| {r['mode']} | {100 * r['clean']:.1f}% | {100 * r['without']:.1f}% | {100 * r['with']:.1f}% | {seq} | "
            f"{r['seconds_without']:.1f} | {r['seconds_with']:.1f} | {r['time_ratio']:.2f}x | {100 * r['apgd_t_alone']:.1f}% | "
            f"{100 * r['fab_t_alone']:.1f}% | {r['apgd_t_seconds']:.1f} | {r['fab_t_seconds']:.1f} |"
        )
    if a.json:
        from robustlens.io import write_json_atomic

        write_json_atomic(a.json, {"rows": rows, "args": vars(a)})


if __name__ == "__main__":
    main()
