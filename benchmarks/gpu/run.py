"""The prepared GPU run: every CUDA path, the fast-AT CIFAR-10 figure and the PGD-10 benchmark.

    python benchmarks/gpu/run.py DATA.tar.gz --out OUT      # on an H100/H200, at most ~9 minutes
    python benchmarks/gpu/run.py --smoke --out OUT          # anywhere, seconds (the test suite runs it)

Writes ``OUT/gpu.json`` (every measurement, with the device, versions and settings) and
``OUT/gpu.log`` (what was printed). Three parts, each recorded even when an earlier one failed:

1. **smoke**: each CUDA path robustlens has, run once and timed: the on-device tensor loader,
   bf16 autocast forward/backward, channels_last, ``torch.compile``, and one-process NCCL
   DistributedDataParallel (gloo on CPU). A failing path is recorded with its error line.
2. **fast AT**: CIFAR-10, PreActResNet-18, FGSM-RS at 8/255 for 15 epochs (Wong et al. 2020:
   83.8% clean, 46.1% PGD-50x10; the target of the training issue is <= 3 minutes, >= 80% clean
   and >= 43% PGD-50x10), then clean accuracy, PGD-50 with 10 restarts and the AutoAttack-style
   ensemble (APGD-CE, APGD-T) on 1,000 seeded test images.
3. **PGD-10 at batch 256**: a bare ``torch.autograd.grad`` loop against robustlens's PGD, both
   contiguous and channels_last, medians of interleaved repeats (ratios, and absolute ms).

``--smoke`` shrinks everything (procedural data at 16 px, one epoch, tiny counts) so the
script cannot rot on machines without a GPU; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from robustlens.attacks import ATTACKS, robust_accuracy
from robustlens.data import load_splits
from robustlens.data.loader import TensorLoader
from robustlens.io import versions, write_json_atomic
from robustlens.models import create
from robustlens.threat import make_threat
from robustlens.train import TrainConfig, train

EPS = 8 / 255
#: the model of every part: PreActResNet-18 on a GPU (the fast-AT figure), a width-4 small CNN
#: under --smoke (set by main)
ARCH: dict[str, Any] = {"name": "preact_resnet18", "kwargs": {}}


def model_for(data) -> torch.nn.Module:
    return create(ARCH["name"], data.num_classes, **ARCH["kwargs"])


class Log:
    """Print to the terminal and to ``gpu.log`` at once."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w")

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(out: dict, device: torch.device):
    t0 = time.perf_counter()
    yield
    sync(device)
    out["seconds"] = round(time.perf_counter() - t0, 3)


def guarded(name: str, fn: Callable[[], dict], log: Log) -> dict:
    """Run one measurement; a failure is recorded (error line and traceback tail), not raised."""
    try:
        out = {"ok": True, **fn()}
    except Exception as e:  # noqa: BLE001 - a GPU run records every failure and goes on
        out = {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
               "traceback": traceback.format_exc().splitlines()[-6:]}
    log(f"{name:24s} {'ok' if out['ok'] else 'FAILED ' + out['error']}  {json.dumps({k: v for k, v in out.items() if k not in ('ok', 'error', 'traceback')})}")
    return out


# ------------------------------------------------------------------------------- 1. smoke


def smoke_loader(device: torch.device, data) -> dict:
    loader = TensorLoader(data, batch_size=64, augment=True, device=device)
    out: dict[str, Any] = {}
    with timed(out, device):
        n = sum(int(x.shape[0]) for x, _ in loader.epoch(0))
    return {**out, "images": n, "device_of_batch": str(next(iter(loader.epoch(0)))[0].device)}


def smoke_bf16(device: torch.device, data) -> dict:
    model = model_for(data).to(device)
    x, y = data.float(slice(0, 32), device), data.labels[:32].to(device)
    out: dict[str, Any] = {}
    with timed(out, device), torch.autocast(device.type, dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    return {**out, "loss_dtype": str(loss.dtype), "finite": bool(torch.isfinite(loss))}


def smoke_channels_last(device: torch.device, data) -> dict:
    model = model_for(data).to(device).eval()
    x = data.float(slice(0, 32), device)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        got = model_cl(x.contiguous(memory_format=torch.channels_last))
    return {"max_abs_diff": float((ref - got).abs().max())}


def smoke_compile(device: torch.device, data) -> dict:
    model = create("small_cnn", data.num_classes, width=8).to(device).eval()
    # inductor on a GPU; on a CPU (--smoke) dynamo's graph capture alone, not minutes of C++ codegen
    compiled = torch.compile(model, backend="inductor" if device.type == "cuda" else "eager")
    x = data.float(slice(0, 16), device)
    out: dict[str, Any] = {}
    with timed(out, device), torch.no_grad():
        diff = float((compiled(x) - model(x)).abs().max())
    return {**out, "max_abs_diff": diff}


def smoke_ddp(device: torch.device, data) -> dict:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        model = create("small_cnn", data.num_classes, width=8).to(device)
        ddp = DDP(model, device_ids=[device.index or 0] if device.type == "cuda" else None)
        x, y = data.float(slice(0, 16), device), data.labels[:16].to(device)
        F.cross_entropy(ddp(x), y).backward()
        t = torch.ones(1, device=device)
        dist.all_reduce(t)
        return {"backend": backend, "all_reduce": float(t)}
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------- 2. fast AT


def fast_at(device: torch.device, splits: dict, smoke: bool, log: Log) -> dict:
    """FGSM-RS PreActResNet-18 (Wong et al. 2020) and its evaluation on a seeded test subset."""
    tr, te = splits["train"], splits["test"]
    epochs, n_eval = (1, 32) if smoke else (15, 1000)
    arch = ARCH["name"]
    model = model_for(tr).to(device)
    cfg = TrainConfig(mode="fgsm-rs", eps=EPS, epochs=epochs, amp=device.type == "cuda",
                      channels_last=device.type == "cuda", progress=False, check_size=0 if smoke else 256)
    out: dict[str, Any] = {"arch": arch, "epochs": epochs, "train_images": len(tr)}
    with timed(out, device):
        res = train(model, tr, cfg, device=device)
    out["train_seconds"] = out.pop("seconds")
    out["history"] = res.history
    sub = te.sample(n_eval, seed=0)
    threat = make_threat("linf", EPS)
    steps, restarts, ens_steps = (2, 1, 2) if smoke else (50, 10, 100)
    t0 = time.perf_counter()
    pgd = robust_accuracy(model, sub, threat, "pgd", batch_size=500, device=device, progress=False, steps=steps, restarts=restarts)
    ens = robust_accuracy(model, sub, threat, "autoattack", batch_size=500, device=device, progress=False,
                          attacks=["apgd-ce", "apgd-t"], steps=ens_steps, n_target_classes=1 if smoke else 9)
    out.update({"eval_images": len(sub), "clean_accuracy": pgd["clean_accuracy"], f"pgd{steps}x{restarts}": pgd["robust_accuracy"],
                "ensemble": ens["robust_accuracy"], "ensemble_per_attack": ens.get("per_attack"),
                "eval_seconds": round(time.perf_counter() - t0, 2)})
    log(f"  fast AT: {out['train_seconds']} s, clean {out['clean_accuracy']:.4f}, PGD {out[f'pgd{steps}x{restarts}']:.4f}, ensemble {out['ensemble']:.4f}")
    return out


# ------------------------------------------------------------------------------- 3. PGD-10


def _bare_pgd(model, x, y, steps: int, eps: float, alpha: float) -> torch.Tensor:
    """The floor: a hand-written PGD of ``torch.autograd.grad`` w.r.t. the input only."""
    delta = (torch.rand_like(x) * 2 - 1) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * g.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1)


def pgd_benchmark(device: torch.device, data, smoke: bool) -> dict:
    """PGD-10 at batch 256, bare loop vs robustlens, contiguous and channels_last (medians)."""
    batch, repeats = (16, 2) if smoke else (256, 7)
    base = model_for(data).to(device).eval()
    for p in base.parameters():
        p.requires_grad_(False)
    x, y = data.float(slice(0, batch), device), data.labels[:batch].to(device)
    threat = make_threat("linf", EPS)
    pgd = ATTACKS.get("pgd")(steps=10)
    variants: dict[str, Callable[[], Any]] = {}
    for layout in ("contiguous", "channels_last"):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        m = model_for(data).to(device).eval().to(memory_format=fmt)
        m.load_state_dict(base.state_dict())
        xi = x.contiguous(memory_format=fmt)
        variants[f"bare_{layout}"] = lambda m=m, xi=xi: _bare_pgd(m, xi, y, 10, EPS, 2.5 * EPS / 10)
        variants[f"robustlens_{layout}"] = lambda m=m, xi=xi: pgd(m, xi, y, threat)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for k, fn in variants.items():  # warm-up (cudnn autotune, allocator)
        fn()
    for _ in range(repeats):
        for k, fn in variants.items():  # interleaved
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"batch": batch, "repeats": repeats, "median_ms": {k: round(1000 * v, 2) for k, v in med.items()},
            "robustlens_vs_bare": {lay: round(med[f"bare_{lay}"] / med[f"robustlens_{lay}"], 3) for lay in ("contiguous", "channels_last")},
            "channels_last_speedup": round(med["robustlens_contiguous"] / med["robustlens_channels_last"], 3)}


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", help="cifar10-jpeg.tar.gz (train/<class>/*.jpg, test/<class>/*.jpg)")
    ap.add_argument("--out", required=True, type=Path, help="folder for gpu.json and gpu.log")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device (for the test suite)")
    ap.add_argument("--skip", default="", help="comma-separated parts to leave out: smoke,fast_at,pgd")
    args = ap.parse_args(argv)
    if not args.smoke and not args.data:
        ap.error("DATA (the CIFAR-10 archive) is required unless --smoke")
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "gpu.log")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    log(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), torch {torch.__version__}")
    t0 = time.perf_counter()
    if args.smoke:
        ARCH.update(name="small_cnn", kwargs={"width": 4})
        torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and the suite shares 2 cores
        splits = load_splits("trifeature", size=16, splits=["train", "test"], n_train=128, n_test=64)
    else:
        splits = load_splits(args.data, size=32)
    data = splits["test"]
    record: dict[str, Any] = {"device": str(device), "smoke": args.smoke, "data": args.data, "versions": versions(),
                              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    skip = set(filter(None, args.skip.split(",")))
    if "smoke" not in skip:
        record["smoke_paths"] = {name: guarded(name, lambda fn=fn: fn(device, data), log) for name, fn in (
            ("loader", smoke_loader), ("bf16", smoke_bf16), ("channels_last", smoke_channels_last),
            ("compile", smoke_compile), ("ddp", smoke_ddp))}
    if "fast_at" not in skip:
        record["fast_at"] = guarded("fast_at", lambda: fast_at(device, splits, args.smoke, log), log)
    if "pgd" not in skip:
        record["pgd10"] = guarded("pgd10_batch256", lambda: pgd_benchmark(device, data, args.smoke), log)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(args.out / "gpu.json", record)
    log(f"done in {record['seconds']} s -> {args.out / 'gpu.json'}")
    failed = [k for k, v in record.items() if isinstance(v, dict) and v.get("ok") is False]
    failed += [k for k, v in record.get("smoke_paths", {}).items() if not v["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
