"""The transfer fit (:func:`sgd_fit`), its batches and augmentation, and accuracy helpers,
shared by late fusion and the constructed data sets. Each step is
:func:`robustlens.train.step.sgd_step`, the step of :func:`robustlens.train.train`.

They work on float tensors in [0, 1] (not only uint8 :class:`~robustlens.data.ImageSet`),
because the non-robust data sets of Ilyas et al. (2019) must be trained from their exact
float images: rounding to uint8 adds noise of L2 length ~0.06 per 32x32 image, a sizeable
fraction of the eps = 0.5 perturbation that carries the label.

Determinism: every batch order comes from an explicit ``torch.Generator`` seeded by the
caller, so the same seed on CPU gives the same numbers.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlens.progress import track
from robustlens.threat import ThreatModel
from robustlens.train.schedule import Schedule
from robustlens.train.step import EpochMeter, Nets, Recipe, sgd_step


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
    """Cross-entropy training with SGD + momentum on float images ``x`` in [0, 1], through
    :func:`robustlens.train.step.sgd_step` (the step :func:`robustlens.train.train` takes).

    ``params`` restricts the optimised parameters (e.g. only a new head); the others keep
    their values. ``schedule`` names a :class:`~robustlens.train.schedule.Schedule`: ``"constant"``
    (the fine-tuning protocol of Itazuri et al. 2019: 30 epochs at lr 0.001) or ``"cosine"``.
    Returns the mean training loss and accuracy of the last epoch.

    What differs from :func:`robustlens.train.train`: batches of a permutation drawn from one
    generator seeded by ``seed`` (the last batch may be smaller), ``augment`` by
    :func:`augment_crop_flip` (reflection padding) drawing from that same generator, and
    ``adversary``: FGSM with a random start (Wong et al. 2020: uniform start in the ball, one
    step of 1.25 eps, projection) whose start is also drawn from it (on CPU).
    """
    device = torch.device(device)
    params = list(model.parameters()) if params is None else params
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    lr_at = Schedule(schedule, lr, epochs, max(1, math.ceil(len(x) / batch_size)))
    recipe = Recipe() if adversary is None else Recipe.fgsm_rs(adversary)
    nets = Nets.single(model)
    g = torch.Generator().manual_seed(int(seed))
    step = 0
    last = {"loss": float("nan"), "accuracy": float("nan")}
    for epoch in track(range(epochs), desc, enabled=show_progress):
        meter = EpochMeter(device)
        for idx in batch_order(len(x), batch_size, g):
            xb, yb = x[idx], y[idx]
            if augment:
                xb = augment_crop_flip(xb, g)
            xb, yb = xb.to(device), yb.to(device)
            out = sgd_step(nets, opt, xb, yb, recipe, lr=lr_at(step), generator=g if xb.device.type == "cpu" else None)
            meter.add(out, yb, recipe.mode)
            step += 1
        loss, acc = meter.mean_loss_and_accuracy()
        last = {"loss": loss, "accuracy": acc, "epoch": epoch + 1}
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
