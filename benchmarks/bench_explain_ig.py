"""Integrated gradients and SmoothGrad: robustlens vs captum, time and peak memory.

    python benchmarks/bench_explain_ig.py                      # small_cnn (width 32), 64 images 32x32
    python benchmarks/bench_explain_ig.py --arch preact_resnet18 --repeats 3

Time: every variant runs ``--repeats`` times, interleaved round-robin in one process (so
machine noise hits all alike); we report medians and ratios to captum.

Peak memory: each variant runs once more in its own fresh subprocess; the number is the
growth of the process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
across the call: peak after minus peak just before (model, inputs and a warm-up forward
already in place). ``tracemalloc`` would miss torch's C++ allocations, hence RSS.

Variants (IG: 50 steps, Gauss-Legendre; SmoothGrad: 50 samples of the vanilla gradient):
  ours IG (internal batch 64) | captum IG internal_batch_size=64 | captum IG one batch
  ours SmoothGrad (internal batch 64) | captum NoiseTunnel(Saliency) one batch (its default)
  | captum NoiseTunnel nt_samples_batch_size=1 (64 rows per chunk)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch

VARIANTS = ("ours_ig", "captum_ig_ibs64", "captum_ig_onebatch", "ours_sg", "captum_nt_onebatch", "captum_nt_chunked")


def build(arch: str, batch: int, size: int, width: int | None):
    from robustlens.models import create

    torch.manual_seed(0)
    kw = {"width": width} if width else {}
    model = create(arch, 10, **kw).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    t = torch.arange(batch) % 10
    return model, x, t


def make(name: str, model, x, t, steps: int, samples: int):
    warnings.filterwarnings("ignore")
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    from robustlens.explain.saliency import integrated_gradients, smoothgrad

    flat = x.flatten(1)
    sigma = float((0.2 * (flat.max(1).values - flat.min(1).values)).mean())
    if name == "ours_ig":
        return lambda: integrated_gradients(model, x, t, steps=steps, internal_batch_size=64)
    if name == "captum_ig_ibs64":
        return lambda: IntegratedGradients(model).attribute(x, target=t, n_steps=steps, method="gausslegendre", internal_batch_size=64)
    if name == "captum_ig_onebatch":
        return lambda: IntegratedGradients(model).attribute(x, target=t, n_steps=steps, method="gausslegendre")
    if name == "ours_sg":
        return lambda: smoothgrad(model, x, t, n_samples=samples, generator=torch.Generator().manual_seed(0), internal_batch_size=64)
    if name == "captum_nt_onebatch":
        return lambda: NoiseTunnel(Saliency(model)).attribute(x, target=t, nt_type="smoothgrad", nt_samples=samples, stdevs=sigma, abs=False)
    if name == "captum_nt_chunked":
        return lambda: NoiseTunnel(Saliency(model)).attribute(
            x, target=t, nt_type="smoothgrad", nt_samples=samples, stdevs=sigma, abs=False, nt_samples_batch_size=1
        )
    raise ValueError(name)


def child(args) -> None:
    """One variant, once, in a fresh process: print the peak-RSS growth in MiB."""
    model, x, t = build(args.arch, args.batch, args.size, args.width)
    fn = make(args.child, model, x, t, args.steps, args.samples)
    with torch.no_grad():
        model(x[:2])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_growth_mib": (after - before) / 1024.0}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--width", type=int, default=None, help="small_cnn width (default: the model's)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return
    names = [v for v in args.variants.split(",") if v]
    model, x, t = build(args.arch, args.batch, args.size, args.width)
    fns = {n: make(n, model, x, t, args.steps, args.samples) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats):
        for n in names:
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names), file=sys.stderr, flush=True)
    mem: dict[str, float] = {}
    if not args.no_memory:
        for n in names:
            cmd = [sys.executable, __file__, "--child", n, "--threads", str(torch.get_num_threads()), "--arch", args.arch, "--batch", str(args.batch), "--size", str(args.size),
                   "--steps", str(args.steps), "--samples", str(args.samples)] + (["--width", str(args.width)] if args.width else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            mem[n] = json.loads(out)["peak_growth_mib"]
    med = {n: statistics.median(v) for n, v in times.items()}
    ref = {"ours_ig": "captum_ig_ibs64", "captum_ig_onebatch": "captum_ig_ibs64", "ours_sg": "captum_nt_onebatch", "captum_nt_chunked": "captum_nt_onebatch"}
    print(f"\n{args.arch}{'' if not args.width else f' (width {args.width})'}, {args.batch} images {args.size}x{args.size}, "
          f"IG {args.steps} steps, SmoothGrad {args.samples} samples, torch threads {torch.get_num_threads()}, {args.repeats} rounds")
    print("| variant | median s | time vs captum ref | peak RSS growth MiB |")
    print("| --- | --- | --- | --- |")
    for n in names:
        r = ref.get(n)
        ratio = f"{med[n] / med[r]:.2f}x of {r}" if r in med else "reference"
        print(f"| {n} | {med[n]:.2f} | {ratio} | {mem.get(n, float('nan')):.0f} |")
    print(json.dumps({"median_s": med, "peak_growth_mib": mem, "all_s": times}))


if __name__ == "__main__":
    main()
