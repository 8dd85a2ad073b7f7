"""Median filter and Gaussian blur throughput: ours vs scipy.ndimage vs kornia, interleaved.

    python benchmarks/bench_probes_filters.py [--n 10000] [--rounds 3]

Median: 3x3, applied 5 times, on N random images of 3x32x32 (float32, [0, 1]); ours is
``robustlens.probes.transforms.median_filter`` (CPU path: column-sort network, 256-image
chunks); scipy on the whole 4-D array with ``size=(1, 1, 3, 3)`` and as a per-image loop;
kornia ``median_blur`` (zero padding, so its numbers differ at the border). Blur: sigma 1.5,
kernel 7, reflect; ours ``gaussian_blur`` (auto: scipy on CPU) and its torch path, kornia
``gaussian_blur2d``, scipy per image. Variants run in turn inside each round; medians of the
rounds; throughput in images/s and as a ratio to scipy (4-D array).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import scipy.ndimage as nd
import torch

from robustlens.probes.transforms import gaussian_blur, median_filter


def _scipy_median_4d(x: np.ndarray, reps: int) -> np.ndarray:
    for _ in range(reps):
        x = nd.median_filter(x, size=(1, 1, 3, 3), mode="nearest")
    return x


def _scipy_median_loop(x: np.ndarray, reps: int) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        y = x[i]
        for _ in range(reps):
            y = nd.median_filter(y, size=(1, 3, 3), mode="nearest")
        out[i] = y
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-loop", action="store_true", help="skip the (slow) scipy per-image loops")
    args = ap.parse_args()
    import importlib.util

    if importlib.util.find_spec("kornia") is None:
        raise SystemExit("kornia is not installed: pip install -e '.[test]' (it is this benchmark's peer)")
    import kornia

    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, 3, 32, 32, generator=g)
    xn = x.numpy()
    reps = args.reps

    def kornia_median(t):
        for _ in range(reps):
            t = kornia.filters.median_blur(t, (3, 3))
        return t

    def chunked(f, t, step=256):
        return torch.cat([f(t[s : s + step]) for s in range(0, t.shape[0], step)])

    median = {
        "ours (robustlens, CPU path)": lambda: median_filter(x, 3, reps),
        "scipy 4-D size (1,1,3,3)": lambda: _scipy_median_4d(xn, reps),
        "scipy per-image loop": lambda: _scipy_median_loop(xn, reps),
        "kornia median_blur (zero pad)": lambda: chunked(kornia_median, x),
    }
    blur = {
        "ours (auto = scipy on CPU)": lambda: gaussian_blur(x, 1.5, 7),
        "ours torch path": lambda: chunked(lambda t: gaussian_blur(t, 1.5, 7, backend="torch"), x),
        "scipy 4-D": lambda: nd.gaussian_filter(xn, sigma=(0, 0, 1.5, 1.5), mode="mirror", radius=(0, 0, 3, 3)),
        "scipy per-image loop": lambda: np.stack([nd.gaussian_filter(xn[i], sigma=(0, 1.5, 1.5), mode="mirror", radius=(0, 3, 3)) for i in range(args.n)]),
        "kornia gaussian_blur2d": lambda: chunked(lambda t: kornia.filters.gaussian_blur2d(t, (7, 7), (1.5, 1.5), border_type="reflect"), x),
    }
    if args.no_loop:
        del median["scipy per-image loop"], blur["scipy per-image loop"]
    # correctness first: the numbers being compared are the same numbers
    assert np.array_equal(median_filter(x[:64], 3, reps).numpy(), _scipy_median_4d(xn[:64], reps))
    for title, variants, ref in (("median 3x3 x%d" % reps, median, "scipy 4-D size (1,1,3,3)"), ("blur k7 sigma1.5", blur, "scipy 4-D")):
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for k, f in variants.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\n{title}, {args.n} images 3x32x32, {args.rounds} rounds interleaved, torch threads {torch.get_num_threads()}")
        print(f"| variant | images/s | speed vs {ref} |\n| --- | ---: | ---: |")
        for k, t in med.items():
            print(f"| {k} | {args.n / t:,.0f} | {med[ref] / t:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
