"""``robustlens study examples/imagenet.toml`` end to end on CPU, on fixtures (issue 18).

Builds, under a temporary folder, every file the example names, in the exact on-disk layouts:

* ``data/imagenet/val/<wnid>/ILSVRC2012_val_*.JPEG``: a tiny ImageNet validation folder
  (``--classes`` WordNet ids x ``--per-class`` JPEGs of random sizes, smooth random pictures);
* ``weights/``: random weights in the published layouts, the torchvision ResNet-50 and AlexNet
  (bare state dicts) and MadryLab's robustness checkpoints (``{"model": {"module.model.*",
  "module.attacker.model.*", "module.normalizer.new_mean", ...}, "optimizer", "schedule",
  "epoch"}``), each read by the study through its catalogue entry (``NAME@PATH``);
* ``stimuli/cue-conflict/<shape>/<shape><i>-<texture><j>.png``, ``stimuli/silhouettes/`` and
  ``stimuli/edges/`` (``<class>/<class><i>.png``), 224 x 224 PNGs.

Then it copies ``examples/imagenet.toml`` next to them with every image count, step count and
grid cut to a tiny size (``OVERRIDES``; the data, the models, the preprocessing and the stages
stay the example's), runs ``robustlens study`` on it in a subprocess and prints its wall time,
the stages' status and the stimuli stage's numbers. The numbers are meaningless (random
weights); the run proves the path.

    .venv/bin/python benchmarks/imagenet_fixture_run.py [--size 224] [--keep DIR]

Measured (2 December, the 2-core CPU machine shared with five other sessions, load average
11-13): ``--size 64`` (res256crop224, then the 224 crop resized to 64), 20 fixture images,
all 14 stages measured, study wall time 2241 s, of which sanity 1530 s (cascading
randomisation of ResNet-50's 107 parametrised layers for STD, ADV and a random model),
robustness 155 s, saliency 154 s, transforms 104 s, stimuli 88 s, faithfulness 76 s,
featvis 48 s, generation 30 s, data and the four checkpoint loads 47 s. Not a timing claim:
the machine was loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "imagenet.toml"
# WordNet ids of the fixture folder: members of Geirhos's 16 categories and Imagenette classes
WNIDS = ["n02690373", "n02123045", "n02085782", "n03417042", "n02132136", "n03041632", "n02504458", "n01440764",
         "n03888605", "n02102040"]
CATEGORIES = ["airplane", "cat", "dog", "truck"]
WEIGHTS = {
    "resnet50-0676ba61.pth": ("imagenet/none/resnet50", "torchvision"),
    "alexnet-owt-7be5be79.pth": ("imagenet/none/alexnet", "torchvision"),
    "imagenet_linf_4.pt": ("imagenet/Linf/Engstrom2019Robustness", "madrylab"),
    "imagenet_linf_8.pt": ("imagenet/Linf/Engstrom2019Robustness_8_255", "madrylab"),
}
# every count cut to a few images / steps; what the example measures stays the same
OVERRIDES = {
    "data": {"n_test": 12, "n_train": 8, "options": {"limit": 20}},
    "stages": {
        "robustness": {"n": 6, "batch_size": 6, "pgd_steps": 2, "autoattack_n": 4, "autoattack_version": "custom",
                       "autoattack_attacks": ["apgd-ce"], "autoattack_steps": 2},
        "transforms": {"n": 6, "batch_size": 6, "blur_sigmas": [0.0, 2.0], "blur_kernel": 5, "median_kernel": 3,
                       "median_repeats": 1},
        "stimuli": {"batch_size": 8},
        "neurons": {"n": 6},
        "saliency": {"n": 1, "smoothgrad_samples": 2, "ig_steps": 2},
        "featvis": {"channels": 1, "steps": 2},
        "sanity": {"n": 1, "methods": ["vanilla"]},
        "faithfulness": {"n": 1, "steps": 2, "road_fractions": [0.5], "infidelity_samples": 2, "sensitivity_samples": 1,
                         "smoothgrad_samples": 2, "ig_steps": 2},
        "generation": {"n": 1, "steps": 2},
    },
}


def smooth_picture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    f = rng.uniform(5, 30, size=(3, 2))
    return np.stack([127 + 110 * np.sin(xx / f[c, 0] + c) * np.cos(yy / f[c, 1]) for c in range(3)], -1).clip(0, 255).astype(np.uint8)


def imagenet_folder(root: Path, classes: int, per_class: int) -> None:
    for k, wnid in enumerate(WNIDS[:classes]):
        d = root / "val" / wnid
        d.mkdir(parents=True)
        for i in range(per_class):
            n = k * per_class + i
            Image.fromarray(smooth_picture(120 + 13 * (n % 7), 160 + 11 * (n % 5), n)).save(d / f"ILSVRC2012_val_{n:08d}.JPEG")


def random_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    """The entry's state dict with random weights (BN statistics positive), in its own key layout."""
    from robustlens.models.catalogue import build, entry

    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = build(entry(name))
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.zeros((), dtype=torch.long)
        elif v.is_floating_point():
            out[k] = torch.rand(v.shape, generator=g) + 0.5 if k.endswith("running_var") else torch.randn(v.shape, generator=g) * 0.02
    return out


def madrylab(sd: dict, mean, std) -> dict:
    """A robustness-library checkpoint (DataParallel'd AttackerModel) around ``sd``."""
    inner = {f"module.model.{k}": v for k, v in sd.items()}
    inner.update({f"module.attacker.model.{k}": v.clone() for k, v in sd.items()})
    for pre in ("module.normalizer", "module.attacker.normalize"):
        inner[f"{pre}.new_mean"] = torch.tensor(mean)[:, None, None]
        inner[f"{pre}.new_std"] = torch.tensor(std)[:, None, None]
    return {"model": inner, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}, "schedule": None, "epoch": 90}


def weights(root: Path) -> None:
    from robustlens.models.catalogue import entry

    root.mkdir(parents=True)
    for seed, (file, (name, layout)) in enumerate(WEIGHTS.items()):
        sd = random_state(name, seed)
        e = entry(name)
        torch.save(sd if layout == "torchvision" else madrylab(sd, e.mean, e.std), root / file)


def stimuli(root: Path) -> None:
    n = 0
    for c in CATEGORIES:
        for i, t in enumerate([x for x in CATEGORIES if x != c][:2] + [c], 1):  # the last one: shape = texture
            for kind, rel in (("cue-conflict", f"{c}/{c}{i}-{t}{i}.png"), ("silhouettes", f"{c}/{c}{i}.png"),
                              ("edges", f"{c}/{c}{i}.png")):
                p = root / kind / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                if not p.exists():
                    Image.fromarray(smooth_picture(224, 224, 1000 + n)).save(p)
                    n += 1


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def to_toml(spec: dict) -> str:
    """The spec as TOML: top-level keys, then ``[data]``, ``[threat]``, ``[models.*]``, ``[stages.*]``."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in spec.items() if not isinstance(v, dict)]
    for table in ("data", "threat"):
        lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in spec.get(table, {}).items()]
    for group in ("models", "stages"):
        for name, body in spec.get(group, {}).items():
            lines += ["", f"[{group}.{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base.get(k, {}), v) if isinstance(v, dict) and k != "options" else v
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="data.size (224 = the example's; res256crop224 then crops 224)")
    ap.add_argument("--classes", type=int, default=10, help="WordNet-id folders in the fixture (at most 10)")
    ap.add_argument("--per-class", type=int, default=2)
    ap.add_argument("--keep", default=None, help="build the fixtures in this folder and keep them")
    ap.add_argument("--timeout", type=int, default=3000, help="seconds before the study is stopped")
    args = ap.parse_args()
    top = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="imagenet_fixture_"))
    top.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    imagenet_folder(top / "data" / "imagenet", args.classes, args.per_class)
    weights(top / "weights")
    stimuli(top / "stimuli")
    spec = merge(tomllib.loads(EXAMPLE.read_text()), {**OVERRIDES, "device": "cpu", "out_dir": str(top / "runs"),
                                                     "data": {**OVERRIDES["data"], "size": args.size}})
    (top / "imagenet.toml").write_text(to_toml(spec))
    built = time.perf_counter() - t0
    env = {**os.environ, "ROBUSTLENS_CACHE": str(top / "cache")}
    cmd = [sys.executable, "-c", "import sys; from robustlens.cli import main; sys.exit(main())", "study", str(top / "imagenet.toml")]
    t1 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - t1
    print(proc.stdout[-6000:], proc.stderr[-3000:], sep="\n")
    print(f"fixtures built in {built:.1f} s under {top}; study wall time {wall:.1f} s (rc {proc.returncode}, "
          f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()})")
    results = top / "runs" / "imagenet" / "results.json"
    if proc.returncode == 0 and results.exists():
        res = json.loads(results.read_text())
        print({k: v["status"] for k, v in res["stages"].items()})
        print(json.dumps(res["results"].get("stimuli", {}).get("models", {}), indent=1)[:3000])
    if not args.keep:
        shutil.rmtree(top, ignore_errors=True)
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
