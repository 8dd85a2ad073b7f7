"""Issue 6's closing numbers: STD vs ADV (FGSM-RS, eps 8/255) small_cnn on the embedded
procedural set (trifeature 32x32 defaults, fine texture 0.07): cue-conflict shape bias,
accuracy under blur / median / the other probes, neuron analysis.

    python benchmarks/bench_probes_mustshow.py --out runs/probes_mustshow [--epochs 15]

Training uses ``robustlens.train.train`` when it is importable, else the short private loop
below (SGD momentum 0.9, batch 128, one-cycle lr peaking at 0.1, FGSM with random start and
step 1.25 eps for ADV; Wong et al. 2020). Trained weights are kept in OUT and reused.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from robustlens.data import load
from robustlens.io import versions, write_json_atomic
from robustlens.models import create
from robustlens.probes.bias import model_bias
from robustlens.probes.evaluate import evaluate_probes, plot_curves, write_table
from robustlens.probes.neurons import analyse_model, compare_summary, plot_neurons
from robustlens.probes.transforms import get_probe


def private_train(mode: str, train_set, eps: float, epochs: int, seed: int = 0, batch: int = 128, lr: float = 0.1):
    torch.manual_seed(seed)
    model = create("small_cnn", num_classes=train_set.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * ((len(train_set) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(len(train_set), generator=g)
        tot = correct = 0
        for s in range(0, len(train_set), batch):
            idx = perm[s : s + batch]
            x, y = train_set.float(idx), train_set.labels[idx]
            if mode != "std":
                delta = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
                delta.requires_grad_(True)
                loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
                (grad,) = torch.autograd.grad(loss, delta)
                delta = (delta.detach() + 1.25 * eps * grad.sign()).clamp(-eps, eps)
                x = (x + delta).clamp(0, 1)
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += len(y)
            correct += int((out.argmax(1) == y).sum())
        print(f"[{mode}] epoch {ep + 1}/{epochs} train acc {correct / tot:.3f}", flush=True)
    return model.eval()


def train_model(mode: str, train_set, eps: float, epochs: int, loop: str = "auto"):
    if loop == "private":
        return private_train(mode, train_set, eps, epochs), "private loop"
    try:
        from robustlens.train import TrainConfig, train  # training helper's loop, when it has landed

        cfg = TrainConfig(mode="std" if mode == "std" else "fgsm-rs", eps=eps, epochs=epochs, batch_size=128, lr=0.1)
        model = create("small_cnn", num_classes=train_set.num_classes)
        train(model, train_set, cfg)
        return model.eval(), "robustlens.train.train"
    except ImportError:
        return private_train(mode, train_set, eps, epochs), "private loop"


@torch.no_grad()
def _acc(model, data):
    return float((torch.cat([model(data.float(slice(s, s + 500))).argmax(1) for s in range(0, len(data), 500)]) == data.labels).float().mean())


def fgsm_accuracy(model, data, eps):
    correct = 0
    for s in range(0, len(data), 500):
        x = data.float(slice(s, s + 500)).requires_grad_(True)
        y = data.labels[s : s + 500]
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
        with torch.no_grad():
            correct += int((model((x + eps * g.sign()).clamp(0, 1)).argmax(1) == y).sum())
    return correct / len(data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/probes_mustshow")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--source", default="trifeature")
    ap.add_argument("--only", choices=["std", "adv", "eval", "neurons", "all"], default="all",
                    help="train one model and stop (run std and adv as two processes), only evaluate, or only redo the neuron analysis")
    ap.add_argument("--n-test", type=int, default=1000, help="test images for the probe curves")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--loop", choices=["auto", "private"], default="auto", help="training loop (auto: robustlens.train when present)")
    args = ap.parse_args()
    out = Path(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    eps = 8 / 255
    train_set = load(args.source, split="train")
    test = load(args.source, split="test")
    conflict = load(args.source, split="conflict")
    models, how = {}, {}
    from safetensors.torch import load_file, save_file

    for mode in ("std", "adv"):
        if args.only in ("std", "adv") and mode != args.only:
            continue
        path = out / f"{mode}.safetensors"
        t0 = time.time()
        if path.exists():
            m = create("small_cnn", num_classes=train_set.num_classes)
            m.load_state_dict(load_file(str(path)))
            models[mode], how[mode] = m.eval(), "loaded"
        else:
            models[mode], how[mode] = train_model(mode, train_set, eps, args.epochs, args.loop)
            save_file({k: v.contiguous() for k, v in models[mode].state_dict().items()}, str(path))
        print(f"{mode}: {how[mode]} in {time.time() - t0:.0f}s", flush=True)
    if args.only in ("std", "adv"):
        return
    res = {"config": {"source": args.source, "epochs": args.epochs, "eps": eps, "training": how}, "versions": versions()}
    res["clean"] = {m: _acc(models[m], test) for m in models}
    res["fgsm_8_255"] = {m: fgsm_accuracy(models[m], test, eps) for m in models}
    res["bias"] = {m: model_bias(models[m], conflict) for m in models}
    print(json.dumps({k: res[k] for k in ("clean", "fgsm_8_255")}), flush=True)
    print({m: round(res["bias"][m]["shape_bias"], 3) for m in models}, flush=True)
    probes = [
        get_probe("blur").with_params(levels=[0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0], kernel_size=7),
        get_probe("median").with_params(levels=list(range(0, 11)), kernel_size=3),
        "invert", "greyscale", "lowpass", "highpass", "stylize", "silhouette", "edges",
    ]
    t0 = time.time()
    if args.only == "neurons":
        rows = json.loads((out / "probes.json").read_text())
    else:
        rows = evaluate_probes(models, test.head(args.n_test), probes, batch_size=500, progress=False)
    res["probe_seconds"] = time.time() - t0
    res["probes"] = rows
    write_table(rows, out / "probes")
    plot_curves(rows, out / "curves.png")
    plot_curves(rows, out / "blur.png", probes=["blur"])
    plot_curves(rows, out / "median.png", probes=["median"])
    neur = {m: analyse_model(models[m], conflict.head(min(args.n_test, 1000))) for m in models}
    res["neurons"] = compare_summary(neur)
    plot_neurons(neur, out / "neurons.png")
    write_json_atomic(out / "results.json", res)
    for r in rows:
        if r["probe"] in ("median", "blur") or r["level"] is None:
            print(r["model"], r["probe"], r["level"], round(r["top1"], 3))
    for r in res["neurons"]:
        print(r)


if __name__ == "__main__":
    main()
