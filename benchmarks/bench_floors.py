"""Floors: robustlens's loops against bare hand-written loops doing the same work, side by side.

Every pair runs in one process, interleaved A/B/A/B for ``--repeats`` rounds; the figure is the
median over rounds of ``bare seconds / robustlens seconds`` (1.00x = at the floor, higher is
faster). The machine is shared, so only these ratios mean anything, never the seconds.

    python benchmarks/bench_floors.py --section layout train pgd robustness --repeats 5 --threads 1

Sections:

* ``layout``: the PGD step (forward + input gradient) and the plain forward of each
  architecture, contiguous against channels_last (model weights and inputs), eval mode: the
  table in ``robustlens/layout.py``;
* ``train``: one epoch of :func:`robustlens.train.train` (STD and FGSM-RS, the study's small CNN
  width 16, batch 128, trifeature 32x32, no held-out check) against a bare loop over the same
  :class:`~robustlens.data.loader.TensorLoader` batches: ``model(x)``, cross-entropy,
  ``backward``, ``SGD.step`` (FGSM-RS: uniform start, one input gradient, step 1.25 eps,
  projection, first), both channels_last;
* ``pgd``: PGD-10 through the study's path (``robust_accuracy`` on a model as the study loads
  it, its first-batch checks included) against the bare loop of 10 ``torch.autograd.grad``
  calls on the same rows, both channels_last; against a bare *evaluation* (the same loop plus
  what any robust-accuracy number needs: a clean forward, a random start and a forward of the
  final iterate); and the same path on the contiguous model (what the study ran before the
  layout change);
* ``robustness``: the robustness stage's attacks (PGD-20 on ``--n`` images, then APGD-CE and
  APGD-T at 100 iterations on the points still robust) against a bare loop making the same
  number of gradient evaluations (counted rows of gradient forwards) at the stage's batch
  size.

Labels are the model's own predictions so every point is attacked (an untrained model would
otherwise leave most of the work out); eps 2/255 for the robustness section so that points
survive PGD and the ensemble has work. The bare loop of the robustness section replays the
attacks' gradient passes batch for batch (their row counts recorded by a forward hook), so the
ratio is what the attacks spend beyond their gradients: no-grad success checks, the clean
forwards, the steps check, bookkeeping.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

CL = torch.channels_last


def interleaved(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of every variant per round, rounds interleaved (after one warm-up call each)."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def ratio(times: dict[str, list[float]], floor: str, other: str) -> tuple[float, float, float]:
    """(median, min, max) over rounds of floor seconds / other seconds."""
    r = [a / b for a, b in zip(times[floor], times[other])]
    return statistics.median(r), min(r), max(r)


def _show(label: str, r: tuple[float, float, float], extra: str = "") -> None:
    print(f"  {label:<58s} {r[0]:.2f}x  (rounds {r[1]:.2f}-{r[2]:.2f}){extra}", flush=True)


def bare_pgd(model, x, y, eps, step, steps, start=None):
    """PGD from ``x`` (or ``start``): the floor of gradient work."""
    xa = x.clone() if start is None else start
    for _ in range(steps):
        xa.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
        xa = torch.min(torch.max(xa.detach() + step * g.sign(), x - eps), x + eps).clamp(0, 1)
    return xa


def _frozen(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def section_layout(args) -> None:
    from robustlens.models import create

    cases = [("small_cnn", dict(width=16), 32, 256), ("preact_resnet18", {}, 32, 32), ("wrn16_4", {}, 32, 64),
             ("resnet18", {}, 96, 16), ("resnet50", {}, 96, 8)]
    print("layout: channels_last speed over contiguous (model + input), eval mode")
    for arch, kw, size, bs in cases:
        if args.archs and arch not in args.archs:
            continue
        torch.manual_seed(0)
        m0 = _frozen(create(arch, num_classes=10, **kw))
        m1 = copy.deepcopy(m0).to(memory_format=CL)
        x = torch.rand(bs, 3, size, size)
        xc = x.contiguous(memory_format=CL)
        y = torch.randint(0, 10, (bs,))

        def grad(m, xx):
            xx = xx.clone().requires_grad_(True)
            return torch.autograd.grad(F.cross_entropy(m(xx), y, reduction="sum"), xx)[0]

        def fwd(m, xx):
            with torch.no_grad():
                return m(xx)

        for what, f in (("PGD step", grad), ("forward", fwd)):
            t = interleaved({"contiguous": lambda: f(m0, x), "channels_last": lambda: f(m1, xc)}, args.repeats)
            _show(f"{arch} {size}px batch {bs} {what}", ratio(t, "contiguous", "channels_last"))


def _train_data(n: int):
    from robustlens.data.trifeature import TrifeatureConfig, generate

    return generate(TrifeatureConfig(size=32), "train", n=n)


def _bare_epoch(model0, data, mode: str, eps: float, batch: int):
    """One epoch of the bare loop on a fresh copy of ``model0`` (channels_last)."""
    from robustlens.data.loader import TensorLoader

    model = copy.deepcopy(model0).to(memory_format=CL).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = TensorLoader(data, batch_size=batch, shuffle=True, seed=0, drop_last=True)
    g = torch.Generator().manual_seed(0)
    for x, y in loader.epoch(0):
        x = x.contiguous(memory_format=CL)
        if mode == "fgsm-rs":
            xa = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps).clamp(0, 1).requires_grad_(True)
            (gr,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
            x = torch.min(torch.max(xa.detach() + 1.25 * eps * gr.sign(), x - eps), x + eps).clamp(0, 1)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def section_train(args) -> None:
    from robustlens.models import create
    from robustlens.train import TrainConfig, train

    data = _train_data(args.train_n)
    torch.manual_seed(0)
    model0 = create("small_cnn", num_classes=data.num_classes, width=16)
    eps = 8 / 255
    print(f"train: one epoch, small_cnn width 16, {args.train_n} trifeature images, batch 128, channels_last")
    for mode in ("std", "fgsm-rs"):
        seconds: dict[str, float] = {}

        def ours(mode=mode):
            cfg = TrainConfig(mode=mode, eps=eps if mode != "std" else None, epochs=1, batch_size=128, check_size=0,
                              log=False)
            t0 = time.perf_counter()
            r = train(copy.deepcopy(model0), data, cfg, device="cpu")
            seconds["call"] = time.perf_counter() - t0
            seconds["epoch"] = r.history[0]["seconds"]

        calls: list[float] = []
        epochs: list[float] = []

        def ours_recorded():
            ours()
            calls.append(seconds["call"])
            epochs.append(seconds["epoch"])

        t = interleaved({"bare": lambda: _bare_epoch(model0, data, mode, eps, 128), "train": ours_recorded}, args.repeats)
        _show(f"{mode}: bare loop / train() whole call", ratio(t, "bare", "train"))
        t["epoch"] = epochs[1:]  # the warm-up call is not a round
        _show(f"{mode}: bare loop / train() epoch (its own clock)", ratio(t, "bare", "epoch"))


def _attack_model(arch_kw: dict, cl: bool):
    from robustlens.layout import fast_layout
    from robustlens.models import create

    torch.manual_seed(0)
    m = _frozen(create("small_cnn", num_classes=10, **arch_kw))
    return fast_layout(m, "cpu") if cl else m


def _points(model, n: int):
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


def section_pgd(args) -> None:
    from robustlens.attacks.evaluate import robust_accuracy
    from robustlens.threat import make_threat

    m_cl, m_c = _attack_model({"width": 16}, True), _attack_model({"width": 16}, False)
    x, y = _points(m_c, args.n)
    xc = x.contiguous(memory_format=CL)
    eps, steps, bs = 8 / 255, 10, 250
    threat = make_threat("linf", eps)

    def bare():
        for i in range(0, len(x), bs):
            bare_pgd(m_cl, xc[i:i + bs], y[i:i + bs], eps, 2.5 * eps / steps, steps)

    def bare_eval():  # the same work as an evaluation: clean forward, random start, 10 steps, final forward
        gen = torch.Generator().manual_seed(0)
        robust = 0
        for i in range(0, len(x), bs):
            xb, yb = xc[i:i + bs], y[i:i + bs]
            with torch.no_grad():
                ok = m_cl(xb).argmax(1) == yb
            start = (xb + torch.empty_like(xb).uniform_(-eps, eps, generator=gen)).clamp(0, 1)
            xa = bare_pgd(m_cl, xb, yb, eps, 2.5 * eps / steps, steps, start=start)
            with torch.no_grad():
                robust += int((ok & (m_cl(xa).argmax(1) == yb)).sum())
        return robust

    def path(model, checks=True):
        return lambda: robust_accuracy(model, (x, y), threat, attack="pgd", steps=steps, batch_size=bs, progress=True,
                                       checks_enabled=checks)

    print(f"pgd: PGD-10 on {args.n} images, batch {bs}, small_cnn width 16")
    t = interleaved({"bare": bare, "bare_eval": bare_eval, "study": path(m_cl), "study_nochecks": path(m_cl, False),
                     "contiguous": path(m_c)}, args.repeats)
    _show("bare loop (channels_last) / study path (channels_last)", ratio(t, "bare", "study"))
    _show("bare loop / study path without the first-batch checks", ratio(t, "bare", "study_nochecks"))
    _show("bare evaluation (+ clean and final forwards, random start) / study path", ratio(t, "bare_eval", "study"))
    _show("bare evaluation / study path without the first-batch checks", ratio(t, "bare_eval", "study_nochecks"))
    _show("study path channels_last / study path contiguous (speed-up)", ratio(t, "contiguous", "study"))


class _GradRows:
    """Counts the rows of every forward made with gradients (one row = one gradient evaluation)."""

    def __init__(self, model) -> None:
        self.batches: list[int] = []
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, module, inputs) -> None:
        if torch.is_grad_enabled() and inputs[0].requires_grad:
            self.batches.append(inputs[0].shape[0])


def section_robustness(args) -> None:
    from robustlens.attacks.evaluate import robust_accuracy
    from robustlens.threat import make_threat

    model = _attack_model({"width": 16}, True)
    x, y = _points(model, args.n)
    xc = x.contiguous(memory_format=CL)
    threat, bs = make_threat("linf", 2 / 255), 250

    def stage():
        r = robust_accuracy(model, (x, y), threat, attack="pgd", steps=20, batch_size=bs, progress=True)
        ra = robust_accuracy(model, (x, y), threat, attack="autoattack", attacks=["apgd-ce", "apgd-t"], steps=100,
                             n_target_classes=1, batch_size=bs, progress=True)
        return r, ra

    counter = _GradRows(model)
    r, ra = stage()
    counter.handle.remove()
    sizes = counter.batches
    print(f"robustness: PGD-20 on {args.n} + APGD-CE/APGD-T (100 it.) on the survivors; robust after PGD "
          f"{r['robust_accuracy']:.3f}, after the ensemble {ra['robust_accuracy']:.3f}; {len(sizes)} gradient passes, "
          f"{sum(sizes)} rows")

    def bare():  # the same gradient passes, batch for batch (rows as the attacks had them)
        for k in sizes:
            xa = xc[:k].clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xa), y[:k], reduction="sum"), xa)

    t = interleaved({"bare": bare, "stage": stage}, args.repeats)
    _show("bare loop (same gradient rows) / the stage's attacks", ratio(t, "bare", "stage"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--section", nargs="+", default=["layout", "train", "pgd", "robustness"],
                    choices=["layout", "train", "pgd", "robustness"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--n", type=int, default=500, help="images for the pgd and robustness sections")
    ap.add_argument("--train-n", type=int, default=2048, help="training images for the train section")
    ap.add_argument("--archs", nargs="*", default=[], help="layout section: only these architectures")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} interleaved rounds, medians")
    for s in args.section:
        globals()[f"section_{s}"](args)


if __name__ == "__main__":
    main()
