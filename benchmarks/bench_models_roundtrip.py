"""Round trip of every registered architecture at its canonical size, and foreign imports.

For each model of the zoo (ImageNet stems with 1000 classes, CIFAR models with 10): perturb
the weights, move the BN statistics (one training-mode forward), save with
``save_checkpoint``, load with ``load_checkpoint`` and check that the outputs on a small
batch are bitwise identical (``torch.equal``), together with the state dict and the
normalisation. Then import the same weights written in three foreign layouts:
torchvision (plain state dict), MadryLab ``robustness`` (``module.model.`` + an attacker
copy with other values + ``module.normalizer.`` buffers) and RobustBench (``module.``
prefix under ``"state_dict"``), and check identical outputs again.

    python benchmarks/bench_models_roundtrip.py [--only resnet18,wrn16_4] [--json out.json]

Times are indicative only (a shared 2-core CPU); the checks are exact.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import torch

from robustlens.models import available, create
from robustlens.models.checkpoint import import_weights, load_checkpoint, save_checkpoint
from robustlens.models.zoo import default_num_classes

SIZE = {"alexnet": 64, "alexnet_bn": 64, "resnet18": 64, "resnet50": 64, "resnet101": 64}


def _prepare(name: str, mean=None, std=None) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {} if mean is None else {"mean": mean, "std": std}
    model = create(name, default_num_classes(name), **kw)
    size = SIZE.get(name, 32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        model.train()
        model(torch.rand(4, 3, size, size))
    return model.eval()


def _same(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return bool(torch.equal(a(x), b(x)))


def run_one(name: str, tmp: Path) -> dict:
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    model = _prepare(name, mean, std)
    size = SIZE.get(name, 32)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    row: dict = {"arch": name, "params": sum(p.numel() for p in model.parameters()), "classes": model.num_classes}
    path = tmp / f"{name}.safetensors"
    t = time.perf_counter()
    save_checkpoint(path, model, {"metrics": {"acc": 0.5}, "seed": 0})
    row["save_s"] = time.perf_counter() - t
    row["file_MiB"] = path.stat().st_size / 2**20
    t = time.perf_counter()
    loaded, sc = load_checkpoint(path)
    row["load_s"] = time.perf_counter() - t
    sd0, sd1 = model.state_dict(), loaded.state_dict()
    row["roundtrip_outputs_equal"] = _same(model, loaded, x)
    row["roundtrip_state_dict_equal"] = list(sd0) == list(sd1) and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    row["roundtrip_normalize_equal"] = bool(torch.equal(model.normalize.mean, loaded.normalize.mean) and torch.equal(model.normalize.std, loaded.normalize.std))
    path.unlink()
    path.with_suffix(".json").unlink()

    # foreign layouts
    sd = model.state_dict()
    tv = tmp / "tv.pth"
    torch.save(sd, tv)
    row["import_torchvision_equal"] = _same(model, import_weights(tv, name, mean=mean, std=std), x)
    tv.unlink()
    rb_sd = OrderedDict([("module.normalizer.new_mean", torch.tensor(mean).view(3, 1, 1)), ("module.normalizer.new_std", torch.tensor(std).view(3, 1, 1))])
    rb_sd.update((f"module.model.{k}", v) for k, v in sd.items())
    rb_sd.update((f"module.attacker.model.{k}", torch.zeros_like(v)) for k, v in sd.items())
    rob = tmp / "robustness.pt"
    torch.save({"model": rb_sd, "epoch": 90}, rob)
    row["import_robustness_equal"] = _same(model, import_weights(rob, name), x)
    rob.unlink()
    bench = tmp / "robustbench.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, bench)
    row["import_robustbench_equal"] = _same(model, import_weights(bench, name, mean=mean, std=std), x)
    bench.unlink()
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated architectures (default: all)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(available())
    rows = []
    checks = ("roundtrip_outputs_equal", "roundtrip_state_dict_equal", "roundtrip_normalize_equal", "import_torchvision_equal", "import_robustness_equal", "import_robustbench_equal")
    print(f"{'arch':16s} {'params':>12s} {'MiB':>7s} {'save s':>7s} {'load s':>7s}  checks (round trip: outputs/state/norm; import: tv/robustness/robustbench)")
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            row = run_one(name, Path(d))
            rows.append(row)
            marks = " ".join("ok" if row[c] else "FAIL" for c in checks)
            print(f"{name:16s} {row['params']:12,d} {row['file_MiB']:7.1f} {row['save_s']:7.2f} {row['load_s']:7.2f}  {marks}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    ok = all(r[c] for r in rows for c in checks)
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
