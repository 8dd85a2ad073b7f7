"""Linear probe: precomputed features vs end to end (features recomputed every batch).

    python benchmarks/bench_transfer_probe_speed.py [--n 1000 --size 64 --epochs 10 --reps 3]

Both paths give the same head (tests/test_transfer_fusion.py checks it to 1e-5); this measures
what precomputing saves, side by side in one process (variants interleaved, medians; the
machine is shared, so only the ratio means anything). The precomputed time includes the one
feature pass; a fusion study reuses that pass for every variant and repeat.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustlens.data.base import ImageSet
from robustlens.models import create
from robustlens.transfer.fusion import LateFusion, new_head, compute_features, fit_linear_head


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (a.n, 3, a.size, a.size), generator=g, dtype=torch.uint8), torch.arange(a.n) % 10, [str(i) for i in range(10)])
    torch.manual_seed(0)
    fused = LateFusion(create("small_cnn", 10, width=a.width), create("small_cnn", 10, width=a.width), 10).freeze_backbones().eval()
    times: dict[str, list[float]] = {"precomputed": [], "end_to_end": []}
    heads = {}
    for _ in range(a.reps):
        for name in times:
            h = new_head(fused.num_features, 10, 0)
            t0 = time.perf_counter()
            if name == "precomputed":
                f = compute_features(fused, data)
                fit_linear_head(h, f, data.labels, epochs=a.epochs, seed=1)
            else:
                fit_linear_head(h, data.float(), data.labels, epochs=a.epochs, seed=1, feature_fn=fused.penultimate)
            times[name].append(time.perf_counter() - t0)
            heads[name] = h
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = float((heads["precomputed"].weight - heads["end_to_end"].weight).detach().abs().max())
    print(f"n={a.n} size={a.size} width={a.width} epochs={a.epochs} threads={a.threads}")
    print(f"median s: precomputed {med['precomputed']:.2f}, end to end {med['end_to_end']:.2f}; "
          f"speed-up {med['end_to_end'] / med['precomputed']:.1f}x; max |dW| {diff:.1e}")


if __name__ == "__main__":
    main()
