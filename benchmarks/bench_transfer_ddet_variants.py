"""D_det training variants on a finished construction (Ilyas et al. 2019): does a fresh model
learn more of the non-robust signal without crop + flip, from the successful perturbations
only, or with more epochs? Every variant trains the same fresh architecture as the source
model on the same constructed set and is evaluated on the same seeded sample of the original
test set, with the original labels.

    python benchmarks/bench_transfer_ddet_variants.py --set /tmp/ddet_eps1 \
        --source runs/cifar10_cpu/checkpoints/std.safetensors \
        --data ../shared/data/cifar10-jpeg.tar.gz --eval-n 2000 --seed 21 --out /tmp/ddet_variants.json

Results: benchmarks/TRANSFER.md ("D_det variations").
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from robustlens.data import load
from robustlens.models.checkpoint import load_checkpoint
from robustlens.transfer.construct import ConstructedSet, load_constructed, train_and_evaluate

VARIANTS = {  # name: (only the successful perturbations, crop + flip, epochs)
    "all, crop+flip, 15 epochs": (False, True, 15),
    "all, no augmentation, 15 epochs": (False, False, 15),
    "successful only, crop+flip, 15 epochs": (True, True, 15),
    "successful only, no augmentation, 15 epochs": (True, False, 15),
    "all, crop+flip, 30 epochs": (False, True, 30),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", required=True, help="a finished `robustlens construct --kind det|rand` folder")
    ap.add_argument("--source", required=True, help="the STD checkpoint the set was built with")
    ap.add_argument("--data", required=True, help="the data source (its test split is the evaluation set)")
    ap.add_argument("--eval-n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--out", default=None, help="write the results as JSON")
    args = ap.parse_args()

    ds = load_constructed(args.set)
    src, _ = load_checkpoint(args.source)
    src.eval()
    with torch.no_grad():
        pred = torch.cat([src(ds.images[s:s + 500]).argmax(1) for s in range(0, len(ds), 500)])
    ok = pred == ds.labels
    print(f"{len(ds)} images, targeted success {ok.float().mean():.3f}")
    kept = ConstructedSet(ds.images[ok], ds.labels[ok], ds.classes, ds.kind, ds.source_index[ok], ds.original_labels[ok])
    test = load(args.data, split="test").sample(args.eval_n, seed=args.seed)
    kwargs = {k: v for k, v in (src.config or {}).items() if k != "num_classes"}
    results = {"set": args.set, "n": len(ds), "targeted_success": float(ok.float().mean()), "variants": {}}
    for name, (only_ok, augment, epochs) in VARIANTS.items():
        t0 = time.time()
        ev = train_and_evaluate(kept if only_ok else ds, test, arch=src.arch, model_kwargs=kwargs, epochs=epochs, lr=args.lr,
                                augment=augment, threat_norm="linf", threat_eps=8 / 255, seed=args.seed, show_progress=False)
        ev.pop("model")
        results["variants"][name] = {k: ev[k] for k in ("n_train", "test_clean_accuracy", "test_robust_accuracy",
                                                         "train_accuracy_constructed_labels", "train_agreement_with_original_labels")}
        print(f"{name:45s} n={ev['n_train']:6d}  original-label test accuracy {ev['test_clean_accuracy']:.4f}  "
              f"PGD-20 8/255 {ev['test_robust_accuracy']:.4f}  ({time.time() - t0:.0f} s)", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
