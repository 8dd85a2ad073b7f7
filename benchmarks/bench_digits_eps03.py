"""STD vs ADV (FGSM-RS) on a digits-like set at L-inf eps 0.3 with the new defaults (issue 20).

The set: seven-segment digits 0-9 drawn procedurally at 28 x 28, 1 channel: segments of
brightness 0.85-1.0, 2-3 px thick, over uniform noise in [0, 0.15], shifted by up to 3 px and
slanted a little. A digit stays readable under any eps-0.3 change (a lit segment >= 0.55, the
background <= 0.45), so a robust classifier exists, as on MNIST (Madry et al. 2018; Wong et al.
2020 train FGSM-RS at eps 0.3 on MNIST to about 88% PGD accuracy).

Both models are ``small_cnn`` with every training hyper-parameter at robustlens's default for
the data (kind ``digits``: no flip, no crop, SGD lr 0.05 cyclic, at least 800 steps), the ADV
model with mode fgsm-rs at eps 0.3 (step 1.25 eps, the catastrophic-overfitting detection and
its default PGD fallback on). Evaluation on 500 fresh test images: clean, PGD-20 (step
2.5 eps / 20, 1 restart), PGD-50 with 2 restarts and APGD-CE (100 steps), and the per-image
worst case over the three.

    .venv/bin/python benchmarks/bench_digits_eps03.py [--n-train 4000] [--out runs/bench_digits]

Writes ``OUT/digits_eps03.json``; benchmarks/DIGITS.md reports a run.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from robustlens.attacks.evaluate import robust_accuracy
from robustlens.data.base import ImageSet
from robustlens.models import create
from robustlens.threat import make_threat
from robustlens.train import TrainConfig, train

EPS = 0.3
#: segments a..g (top, top-right, bottom-right, bottom, bottom-left, top-left, middle) lit per digit
SEGMENTS = {0: "abcdef", 1: "bc", 2: "abged", 3: "abgcd", 4: "fgbc", 5: "afgcd", 6: "afgedc", 7: "abc", 8: "abcdefg", 9: "abcdfg"}


def seven_segment(n: int, seed: int, size: int = 28) -> ImageSet:
    """``n`` seven-segment digits (labels uniform over 0-9) as a 1-channel uint8 ImageSet."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, 1, size, size, generator=g) * 0.15
    rows, cols = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    for i in range(n):
        dy, dx = (torch.randint(-3, 4, (2,), generator=g)).tolist()
        t = int(torch.randint(2, 4, (1,), generator=g))
        slant = float(torch.rand(1, generator=g) * 0.3 - 0.15)
        level = float(0.85 + 0.15 * torch.rand(1, generator=g))
        top, mid, bot, left, right = 5 + dy, 13 + dy, 21 + dy, 8 + dx, 19 + dx
        c = cols - slant * (rows - mid)
        boxes = {"a": (top, top + t, left, right), "g": (mid, mid + t, left, right), "d": (bot, bot + t, left, right),
                 "f": (top, mid + t, left, left + t), "b": (top, mid + t, right - t, right),
                 "e": (mid, bot + t, left, left + t), "c": (mid, bot + t, right - t, right)}
        img = torch.zeros(size, size)
        for s in SEGMENTS[int(y[i])]:
            r0, r1, c0, c1 = boxes[s]
            img = torch.maximum(img, ((rows >= r0) & (rows < r1) & (c >= c0) & (c < c1)).float())
        x[i, 0] = torch.maximum(x[i, 0], img * level)
    return ImageSet((x.clamp(0, 1) * 255).round().to(torch.uint8), y, [str(d) for d in range(10)], name="seven-segment")


def evaluate(model, test: ImageSet) -> dict:
    """Clean, PGD-20, PGD-50x2, APGD-CE and the per-image worst case on ``test``."""
    threat = make_threat("linf", EPS)
    runs = {"pgd-20": dict(attack="pgd", steps=20), "pgd-50x2": dict(attack="pgd", steps=50, restarts=2),
            "apgd-ce": dict(attack="apgd-ce", steps=100)}
    out, worst = {}, None
    for name, kw in runs.items():
        r = robust_accuracy(model, test, threat, progress=False, per_example=True, **kw)
        out[name] = r["robust_accuracy"]
        out["clean"] = r["clean_accuracy"]
        worst = r["robust_flags"] if worst is None else worst & r["robust_flags"]
    out["worst_case"] = float(worst.float().mean())
    n = len(test)
    out["worst_case_ci95"] = [round(v, 4) for v in _wilson(int(worst.sum()), n)]
    return out


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--width", type=int, default=8, help="small_cnn width (8: a few minutes on 2 loaded CPU cores)")
    ap.add_argument("--out", default="runs/bench_digits")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    train_set, test = seven_segment(args.n_train, seed=0), seven_segment(args.n_test, seed=1)
    report = {"eps": EPS, "n_train": args.n_train, "n_test": args.n_test, "models": {}}
    for name, mode in (("std", "std"), ("adv", "fgsm-rs")):
        torch.manual_seed(0)
        model = create("small_cnn", 10, in_channels=1, width=args.width)
        cfg = TrainConfig(mode=mode, eps=EPS if mode != "std" else None, progress=False)
        t0 = time.perf_counter()
        r = train(model, train_set, cfg, out_dir=out / name, device="cpu")
        c = r.config
        report["models"][name] = {
            "recipe": {"kind": c.kind, "epochs": c.epochs, "batch_size": c.batch_size, "lr": c.lr, "schedule": c.schedule,
                       "augmentation": c.augmentation(), "step_size": c.step_size, "check_eps": c.check_eps,
                       "co_remedy": c.co_remedy},
            "catastrophic_overfitting": r.catastrophic_overfitting, "co_fallback": r.co_fallback,
            "selected_epoch": r.selected_epoch, "not_robust": r.not_robust,
            "history": [{k: h.get(k) for k in ("epoch", "mode", "train_accuracy", "check_clean_accuracy",
                                                 "check_robust_accuracy", "co_reason")} for h in r.history],
            "train_seconds": round(time.perf_counter() - t0, 1),
            "test": evaluate(model, test),
        }
        print(json.dumps({name: report["models"][name]["test"]}), flush=True)
    (out / "digits_eps03.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'digits_eps03.json'}")


if __name__ == "__main__":
    main()
