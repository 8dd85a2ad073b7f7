"""Issue 7 must-show on the procedural set (CPU): late fusion table + Ilyas et al. data sets.

    python benchmarks/bench_transfer_mustshow.py --out runs/transfer_mustshow            # everything
    python benchmarks/bench_transfer_mustshow.py --out runs/transfer_mustshow --only fusion

Stages (each cached under --out, so a rerun continues):
1. backbones: 2 STD + 2 ADV small_cnn (seeds 0, 1) on trifeature (label = shape, 32 px),
   ADV = FGSM-RS at L-inf 8/255 (Wong et al. 2020); private loop of robustlens.transfer._loops.
2. fusion: linear probe (frozen backbones, features computed once) of STD, ADV, STD+STD,
   ADV+ADV, STD+ADV on new trifeature images (generator seed 1) rendered at 32, 64, 96 px,
   3 repeats -> fusion/results.json, table.md, table.csv, fusion.png.
3. construct: D_R from ADV seed 0 (representation inversion), D_det from STD seed 0
   (targeted L2 PGD, t = y + 1), fresh small_cnn trained on each, evaluated on the original
   test split, clean and under L2 PGD; source models evaluated the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from robustlens.data import load
from robustlens.io import versions, write_json_atomic
from robustlens.models import create
from robustlens.threat import L2, Linf
from robustlens.transfer._loops import accuracy, robust_accuracy, sgd_fit
from robustlens.transfer.construct import construct_dataset, train_and_evaluate
from robustlens.transfer.fusion import run_fusion_study, table_markdown


def get_backbone(out: Path, kind: str, seed: int, train, args) -> torch.nn.Module:
    path = out / f"backbones{args.tag}" / f"{kind}_s{seed}.pt"
    torch.manual_seed(seed)
    model = create("small_cnn", 10, width=args.width)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    adversary = Linf(8 / 255) if kind == "adv" else None
    t0 = time.time()
    last = sgd_fit(model.train(), train.float(), train.labels, epochs=args.backbone_epochs, lr=args.backbone_lr, batch_size=128, seed=seed, schedule="cosine", adversary=adversary, desc=f"{kind} s{seed}")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    write_json_atomic(path.with_suffix(".json"), {"kind": kind, "seed": seed, "width": args.width, "epochs": args.backbone_epochs, "lr": args.backbone_lr, "adversary": adversary.to_dict() if adversary else None, "last_epoch": last, "seconds": time.time() - t0})
    return model.eval()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/transfer_mustshow")
    p.add_argument("--only", choices=["backbones", "fusion", "construct"], default=None)
    p.add_argument("--source", default="trifeature:n_train=2000,n_test=500", help="backbone training data (32 px)")
    p.add_argument("--target", default="trifeature:n_train=1000,n_test=500,seed=1", help="fusion target (rendered at 32, 64, 96)")
    p.add_argument("--sizes", default="32,64,96")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--backbone-epochs", type=int, default=8)
    p.add_argument("--backbone-lr", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n-construct", type=int, default=1000)
    p.add_argument("--robust-steps", type=int, default=100)
    p.add_argument("--robust-step-size", type=float, default=0.5)
    p.add_argument("--robust-init", default="image", choices=["image", "noise"])
    p.add_argument("--det-steps", type=int, default=20)
    p.add_argument("--det-step-size", type=float, default=0.1)
    p.add_argument("--train-epochs", type=int, default=15)
    p.add_argument("--n-eval", type=int, default=400)
    p.add_argument("--eval-steps", type=int, default=10)
    p.add_argument("--det-eps", type=float, default=0.5, help="L2 eps of the det / rand perturbations (paper: 0.5)")
    p.add_argument("--kinds", default="robust,det", help="constructed sets to build (robust, det, rand)")
    p.add_argument("--cstd-width", type=int, default=None, help="train a separate STD source for det / rand with this width")
    p.add_argument("--cstd-epochs", type=int, default=15)
    p.add_argument("--tag", default="", help="suffix of the backbones / fusion folders (another backbone recipe)")
    p.add_argument("--seeds", default="0,1", help="with --only backbones: train only these seeds (parallel processes)")
    p.add_argument("--construct-name", default="construct", help="subfolder of --out for the construction stage")
    p.add_argument("--threads", type=int, default=1, help="1 is much faster on a shared 2-core machine")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t_all = time.time()

    train = load(args.source, split="train", size=32)
    test = load(args.source, split="test", size=32)
    if args.only == "backbones":
        for s in [int(v) for v in args.seeds.split(",")]:
            for k in ("std", "adv"):
                get_backbone(out, k, s, train, args)
        return 0
    models = {(k, s): get_backbone(out, k, s, train, args) for k in ("std", "adv") for s in (0, 1)}
    bb_file = out / f"backbones{args.tag}" / "eval.json"
    if not bb_file.exists():
        ev = {}
        xt, yt = test.float()[: args.n_eval], test.labels[: args.n_eval]
        for (k, s), m in models.items():
            ra = robust_accuracy(m, xt, yt, Linf(8 / 255), steps=args.eval_steps)
            ev[f"{k}_s{s}"] = {"clean": accuracy(m, test.float(), test.labels), "pgd_linf_8/255": ra["robust_accuracy"]}
        write_json_atomic(bb_file, {"source": args.source, "n_eval_robust": args.n_eval, "pgd_steps": args.eval_steps, "models": ev})
    print(json.dumps(json.loads(bb_file.read_text())["models"], indent=1))

    if args.only in (None, "fusion"):
        sizes = [int(s) for s in args.sizes.split(",")]
        res = run_fusion_study(
            {"std": [models[("std", 0)], models[("std", 1)]], "adv": [models[("adv", 0)], models[("adv", 1)]]},
            [(args.target, s) for s in sizes],
            "std,adv,std+std,adv+adv,std+adv",
            repeats=args.repeats,
            mode="linear",
            out_dir=out / f"fusion{args.tag}",
        )
        print(table_markdown(res["table"]))
        print(json.dumps(res["pattern"], indent=1))

    if args.only in (None, "construct"):
        cdir = out / args.construct_name
        rows = {}
        xt, yt = test.float()[: args.n_eval], test.labels[: args.n_eval]
        sub_test = test.subset(slice(0, args.n_eval))
        threats = {"linf 8/255": Linf(8 / 255), "l2 0.25": L2(0.25), "l2 0.5": L2(0.5)}

        def evaluate(m):
            m.eval()
            return {"clean": accuracy(m, test.float(), test.labels), **{k: robust_accuracy(m, xt, yt, t, steps=args.eval_steps)["robust_accuracy"] for k, t in threats.items()}}

        std_src = models[("std", 0)]
        if args.cstd_width is not None:
            a2 = argparse.Namespace(**{**vars(args), "width": args.cstd_width, "backbone_epochs": args.cstd_epochs})
            std_src = get_backbone(out, f"cstd_w{args.cstd_width}_e{args.cstd_epochs}", 0, train, a2)
        rows["STD source (of D_det / D_rand)"] = evaluate(std_src)
        rows["ADV source (of D_R)"] = evaluate(models[("adv", 0)])
        details = {}
        for kind in args.kinds.split(","):
            if kind == "robust":
                m, spec = models[("adv", 0)], dict(steps=args.robust_steps, step_size=args.robust_step_size, init=args.robust_init)
            else:
                m, spec = std_src, dict(steps=args.det_steps, step_size=args.det_step_size, eps=args.det_eps)
            name = {"robust": "D_R", "det": "D_det", "rand": "D_rand"}[kind]
            ds = construct_dataset(m, train, kind, out_dir=cdir / name, n=args.n_construct, **spec)
            ev = train_and_evaluate(ds, sub_test, model_kwargs={"width": args.width}, epochs=args.train_epochs, lr=0.05, threat_eps=0.25, attack_steps=args.eval_steps)
            model = ev.pop("model")
            ev["construct"] = ds.meta.get("config", {})
            with torch.no_grad():
                ev["source_model_predicts_target"] = float((m.eval()(ds.images[:1000]).argmax(1) == ds.labels[:1000]).float().mean())
            if kind != "robust":
                ev["mean_l2_perturbation"] = float((ds.images - train.float(ds.source_index)).flatten(1).norm(dim=1).mean())
            details[name] = ev
            rows[f"trained on {name}"] = evaluate(model)
        from robustlens.transfer.construct import ConstructedSet

        orig = train.subset(slice(0, args.n_construct))
        base = ConstructedSet(orig.float(), orig.labels, list(train.classes), "original", torch.arange(len(orig)), orig.labels)
        ev = train_and_evaluate(base, sub_test, model_kwargs={"width": args.width}, epochs=args.train_epochs, lr=0.05, threat_eps=0.25, attack_steps=args.eval_steps)
        rows["trained on D (original images, same n)"] = evaluate(ev.pop("model"))
        write_json_atomic(cdir / "results.json", {"rows": rows, "details": details, "config": vars(args), "versions": versions()})
        print("| model | clean | " + " | ".join(f"PGD {k}" for k in threats) + " |\n| --- |" + " --- |" * (1 + len(threats)))
        for k, r in rows.items():
            print(f"| {k} | {100 * r['clean']:.1f} | " + " | ".join(f"{100 * r[t]:.1f}" for t in threats) + " |")
        for k, d in details.items():
            print(k, {kk: d[kk] for kk in ("source_model_predicts_target", "train_accuracy_constructed_labels", "train_agreement_with_original_labels", "mean_l2_perturbation") if kk in d})
    print(f"total {time.time() - t_all:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
