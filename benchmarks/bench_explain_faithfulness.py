"""Pixel flipping and ROAD: robustlens.explain.faithfulness against Quantus 0.6 on the same
inputs, in one process, runs interleaved; prints the medians, their ratio and the largest
difference of the results.

    .venv/bin/python benchmarks/bench_explain_faithfulness.py [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import quantus
import torch
from torch import nn

from robustlens.explain import faithfulness as fa
from robustlens.models import create

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create("small_cnn", 10, width=16).eval()
    g = torch.Generator().manual_seed(1)
    x, phi = torch.rand(32, 3, 32, 32, generator=g), torch.randn(32, 3, 32, 32, generator=g)
    t = model(x).argmax(1)
    net1 = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 10)).eval()
    x1, a1 = torch.rand(32, 1, 32, 32, generator=g), torch.randn(32, 1, 32, 32, generator=g)
    t1 = net1(x1).argmax(1)
    pcts = [10, 30, 50, 70, 90]
    pf_q = quantus.PixelFlipping(features_in_step=64, perturb_baseline=0.5, disable_warnings=True, display_progressbar=False)
    road_q = quantus.ROAD(percentages=pcts, noise=0.0, disable_warnings=True, display_progressbar=False)
    runs = {
        "pixel flipping, quantus": lambda: np.array(pf_q(model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=phi.numpy(), device="cpu", softmax=True, channel_first=True)),
        "pixel flipping, robustlens": lambda: fa.deletion_curve(model, x, t, phi, baseline=0.5, steps=48, ranking="elementwise", internal_batch_size=256)["scores"][:, 1:].numpy(),
        "ROAD, quantus": lambda: np.array([road_q(model=net1, x_batch=x1.numpy(), y_batch=t1.numpy(), a_batch=a1.numpy(), device="cpu", channel_first=True)[p] for p in pcts]),
        "ROAD, robustlens": lambda: np.array(fa.road(net1, x1, t1, a1, fractions=[p / 100 for p in pcts], noise=0.0, ranking="signed", orders=("morf",), internal_batch_size=256)["morf"]["accuracy"]),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    out: dict[str, np.ndarray] = {}
    for _ in range(args.reps):
        for k, fn in runs.items():  # interleaved
            t0 = time.perf_counter()
            out[k] = fn()
            times[k].append(time.perf_counter() - t0)
    for metric in ("pixel flipping", "ROAD"):
        q, r = statistics.median(times[f"{metric}, quantus"]), statistics.median(times[f"{metric}, robustlens"])
        diff = float(np.abs(out[f"{metric}, quantus"] - out[f"{metric}, robustlens"]).max())
        print(f"{metric}: quantus {q:.3f} s, robustlens {r:.3f} s, ratio {q / r:.1f}x, max |difference| {diff:.2e}")


if __name__ == "__main__":
    main()
