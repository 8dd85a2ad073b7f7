"""PGD-10 (L-inf, eps 8/255, step 2/255, no random start, CE loss on logits) throughput:
robustlens vs ART vs foolbox vs captum.robust.PGD vs a bare loop of 10 torch.autograd.grad
calls (the floor), variants interleaved in one process, medians, reported as ratios.

    python benchmarks/bench_attacks_pgd.py --models small_cnn preact_resnet18 --repeats 5

Every variant runs the same iterates: sign-gradient steps of the summed cross-entropy of the
logits, projected onto the ball and [0, 1]. captum's PGD is given a cross-entropy loss on
logits (its default, -log(output[target]), expects probabilities) and zero_thresh = 0
(its default 1e-6 skips pixels whose gradient is smaller).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F


def bare_loop(model, x, y, eps, step, steps):
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
        xa = torch.min(torch.max(xa.detach() + step * g.sign(), x - eps), x + eps).clamp(0, 1)
    return xa


def _peer(module: str, package: str, extra: str) -> bool:
    """Whether the peer ``module`` is installed; if not, one line names the extra that brings it."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return True
    print(f"skipping {package}: not installed (pip install -e '.[{extra}]')")
    return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["small_cnn", "preact_resnet18"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--skip", nargs="*", default=[], help="variants to leave out")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from robustlens.attacks import pgd
    from robustlens.models import create
    from robustlens.threat import Linf

    eps, steps = 8 / 255, 10
    step = 2 / 255
    threat = Linf(eps)
    for name in args.models:
        torch.manual_seed(0)
        model = create(name, 10).eval()
        x = torch.rand(args.batch, 3, 32, 32)
        y = torch.randint(0, 10, (args.batch,))
        variants = {
            "bare loop (floor)": lambda: bare_loop(model, x, y, eps, step, steps),
            "robustlens pgd": lambda: pgd(model, x, y, threat, steps=steps, step_size=step, random_start=False),
        }
        if "channels_last" not in args.skip:
            m_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            variants["bare loop, channels_last model+input"] = lambda: bare_loop(m_cl, x_cl, y, eps, step, steps)
        if "art" not in args.skip and _peer("art", "adversarial-robustness-toolbox", "test"):
            from art.attacks.evasion import ProjectedGradientDescent
            from art.estimators.classification import PyTorchClassifier

            clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10, clip_values=(0.0, 1.0))
            art = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=step, max_iter=steps, num_random_init=0, batch_size=args.batch, verbose=False)
            xn, yn = x.numpy(), y.numpy()
            variants["ART"] = lambda: art.generate(xn, y=yn)
        if "foolbox" not in args.skip and _peer("foolbox", "foolbox", "bench"):
            import foolbox as fb

            fmodel = fb.PyTorchModel(model, bounds=(0, 1))
            fpgd = fb.attacks.LinfPGD(abs_stepsize=step, steps=steps, random_start=False)
            variants["foolbox"] = lambda: fpgd(fmodel, x, y, epsilons=eps)
        if "captum" not in args.skip and _peer("captum", "captum", "test"):
            from captum.robust import PGD

            cpgd = PGD(model, loss_func=lambda out, t: F.cross_entropy(out, t, reduction="none"), lower_bound=0.0, upper_bound=1.0)
            cpgd.fgsm.zero_thresh = 0.0  # its default 1e-6 leaves pixels with tiny gradients unchanged
            variants["captum.robust.PGD"] = lambda: cpgd.perturb(x, radius=eps, step_size=step, step_num=steps, target=y, random_start=False, norm="Linf")

        # sanity: everyone computes the same attack
        ref = variants["robustlens pgd"]()
        acc = {}
        for k, f in variants.items():
            out = f()
            if isinstance(out, (tuple, list)):  # foolbox: (raw, clipped, success)
                out = out[1]
            out = torch.as_tensor(out).detach()
            acc[k] = float((out - ref).abs().flatten(1).amax(1).le(1e-5).float().mean())
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeats):
            for k, f in variants.items():  # interleaved
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        floor = statistics.median(times["bare loop (floor)"])
        print(f"\n{name}, PGD-10, batch {args.batch}, 32x32, {torch.get_num_threads()} threads, {args.repeats} interleaved repeats")
        print(f"{'variant':40s} {'median s':>9s} {'img/s':>8s} {'speed vs floor':>15s} {'same adv. images':>17s}")
        for k, v in times.items():
            med = statistics.median(v)
            print(f"{k:40s} {med:9.3f} {args.batch / med:8.1f} {floor / med:14.2f}x {100 * acc[k]:16.1f}%")


if __name__ == "__main__":
    main()
