"""Small, readable loops shared by late fusion and the constructed data sets.

They work on float tensors in [0, 1] (not only uint8 :class:`~robustlens.data.ImageSet`),
because the non-robust data sets of Ilyas et al. (2019) must be trained from their exact
float images: rounding to uint8 adds noise of L2 length ~0.06 per 32x32 image, a sizeable
fraction of the eps = 0.5 perturbation that carries the label.

Determinism: every batch order comes from an explicit ``torch.Generator`` seeded by the
caller, so the same seed on CPU gives the same numbers.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlens.threat import ThreatModel


def progress(iterable, total: int | None = None, desc: str = "", enabled: bool = True, **kw):
    """A tqdm bar when enabled (tqdm hides itself when stderr is not a terminal)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, **kw)


def batch_order(n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True) -> Iterator[Tensor]:
    """Index batches of one epoch: a permutation drawn from ``generator`` cut into batches."""
    idx = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for s in range(0, n, batch_size):
        yield idx[s : s + batch_size]


def augment_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random crop with ``pad`` pixels of reflection padding and a random horizontal flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(n):  # n small crops; a gather would not be clearer or much faster on CPU
        crop = padded[i, :, int(dy[i]) : int(dy[i]) + h, int(dx[i]) : int(dx[i]) + w]
        out[i] = crop.flip(-1) if bool(flip[i]) else crop
    return out


def sgd_fit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    params: list[nn.Parameter] | None = None,
    augment: bool = False,
    schedule: str = "constant",
    device: torch.device | str = "cpu",
    show_progress: bool = True,
    desc: str = "train",
    adversary: ThreatModel | None = None,
) -> dict:
    """Standard (cross-entropy) training with SGD + momentum on float images ``x`` in [0, 1].

    ``params`` restricts the optimised parameters (e.g. only a new head); the others keep
    their values. ``schedule`` is ``"constant"`` (the fine-tuning protocol of Itazuri et al.
    2019: 30 epochs at lr 0.001) or ``"cosine"``. Returns the mean training loss and accuracy
    of the last epoch.

    ``adversary``: train on FGSM with random start instead (Wong et al. 2020, "Fast is better
    than free": uniform start in the ball, one step of 1.25 eps, projection), a compact
    fallback for making ADV backbones when ``robustlens.train`` is not available.
    """
    device = torch.device(device)
    params = list(model.parameters()) if params is None else params
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(len(x) / batch_size))
    total = epochs * steps_per_epoch
    g = torch.Generator().manual_seed(int(seed))
    step = 0
    last = {"loss": float("nan"), "accuracy": float("nan")}
    for epoch in progress(range(epochs), total=epochs, desc=desc, enabled=show_progress):
        loss_sum, correct, seen = 0.0, 0, 0
        for idx in batch_order(len(x), batch_size, g):
            xb, yb = x[idx], y[idx]
            if augment:
                xb = augment_crop_flip(xb, g)
            xb, yb = xb.to(device), yb.to(device)
            if schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            if adversary is not None:
                x0 = adversary.random_init(xb, g if xb.device.type == "cpu" else None).requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(model(x0), yb), x0)
                xb = adversary.project(adversary.ascent_step(x0.detach(), grad, 1.25 * adversary.eps), xb).detach()
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += float(loss.detach()) * len(yb)
            correct += int((out.argmax(1) == yb).sum())
            seen += len(yb)
        last = {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "epoch": epoch + 1}
    return last


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256, device: torch.device | str = "cpu") -> float:
    """Clean top-1 accuracy of ``model`` (put in eval mode by the caller) on float images."""
    correct = 0
    for s in range(0, len(x), batch_size):
        out = model(x[s : s + batch_size].to(device))
        correct += int((out.argmax(1).cpu() == y[s : s + batch_size]).sum())
    return correct / max(len(x), 1)


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int = 20,
    step_size: float | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict:
    """Clean and PGD accuracy (random start, ``step_size = 2.5 eps / steps``, Madry et al.)
    through :func:`robustlens.attacks.evaluate.robust_accuracy`."""
    from robustlens.attacks.evaluate import robust_accuracy as _robust_accuracy

    step_size = step_size if step_size is not None else 2.5 * threat.eps / steps
    res = _robust_accuracy(model, (x, y), threat, attack="pgd", batch_size=batch_size, device=device, seed=seed,
                           progress=False, steps=steps, step_size=step_size)
    return {"clean_accuracy": float(res["clean_accuracy"]), "robust_accuracy": float(res["robust_accuracy"]),
            "attack": "robustlens.attacks.pgd"}


def run_in_eval(model: nn.Module, fn: Callable[[], Tensor]) -> Tensor:
    """Run ``fn`` with ``model`` in eval mode, restoring its previous mode afterwards."""
    was = model.training
    model.eval()
    try:
        return fn()
    finally:
        model.train(was)
