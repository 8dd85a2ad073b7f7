"""The two ways a fusion variant is fitted to a target (Itazuri et al. 2019, Sec. 4.2).

* the linear probe (:func:`fit_linear_head`): frozen backbones, a new head trained on their
  features, computed once per backbone and target (:func:`compute_features`) or on the fly;
* fine-tuning (:func:`fit_finetune`): every weight trained by :func:`robustlens.train.train`
  (the paper: 30 epochs at lr 0.001, SGD momentum 0.9, constant lr).

Both take their optimiser steps through :func:`robustlens.train.step.sgd_step`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from robustlens.evalmode import eval_mode
from robustlens.train import TrainConfig, train
from robustlens.train.step import Nets, Recipe, sgd_step
from robustlens.progress import track
from robustlens.transfer._loops import batch_order
from robustlens.transfer.fusion.inputs import Target
from robustlens.transfer.fusion.model import LateFusion

#: the paper's fine-tuning protocol (Sec. 4.2): 30 epochs, lr 0.001, SGD momentum 0.9
PAPER_EPOCHS = 30
PAPER_LR = 1e-3
#: linear probe defaults (standardised features, so one lr suits STD and ADV features alike)
LINEAR_EPOCHS = 30
LINEAR_LR = 0.05


@torch.no_grad()
def compute_features(model: nn.Module, images: Tensor | Any, batch_size: int = 256, device: torch.device | str = "cpu", show_progress: bool = False, desc: str = "features") -> Tensor:
    """``model.penultimate`` of every image (eval mode), on CPU as float32 (N, F).

    ``images``: an ImageSet (uint8, converted batch by batch) or float images in [0, 1].
    """
    n = len(images)
    out = []
    with eval_mode(model):
        for s in track(range(0, n, batch_size), desc, enabled=show_progress):
            if isinstance(images, Tensor):
                xb = images[s : s + batch_size].to(device)
            else:
                xb = images.float(slice(s, s + batch_size), device=device)
            out.append(model.penultimate(xb).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def new_head(in_features: int, num_classes: int, seed: int) -> nn.Linear:
    """A freshly initialised head; its initial weights depend only on ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return nn.Linear(in_features, num_classes)


def _standardizer(feats, get, n: int, device, feature_fn) -> tuple[Tensor, Tensor]:
    """Training-set mean and std (clamped at 1e-6) of the features, per feature."""
    if feature_fn is None:
        f_all = feats.to(device)
    else:
        f_all = torch.cat([get(idx) for idx in batch_order(n, 512, torch.Generator(), shuffle=False)])
    return f_all.mean(0), f_all.std(0, unbiased=False).clamp_min(1e-6)


def fit_linear_head(
    head: nn.Linear,
    feats: Tensor,
    y: Tensor,
    *,
    epochs: int = LINEAR_EPOCHS,
    lr: float = LINEAR_LR,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    standardize: bool = True,
    feature_fn=None,
    device: torch.device | str = "cpu",
) -> nn.Linear:
    """Train ``head`` by SGD on features (the linear probe), in place.

    ``feats`` are precomputed features (N, F) (the fast path), or, when ``feature_fn`` is
    given, ``feats`` holds the images and ``feature_fn(x_batch)`` computes features on the fly
    (the end-to-end path; same batch order from the same seed, so both give the same head).

    ``standardize``: train on z-scored features ``z = (f - m) / s`` (training-set statistics),
    then fold the statistics into the head (``W' = W / s``, ``b' = b - W' m``), so the result
    is an ordinary head on raw features. This keeps one learning rate usable for backbones
    whose feature scales differ (ADV features are typically much smaller than STD ones).
    """
    n = len(y)
    if feature_fn is None:
        get = lambda idx: feats[idx].to(device)  # noqa: E731
    else:
        get = lambda idx: feature_fn(feats[idx].to(device) if isinstance(feats, Tensor) else feats.float(idx, device=device))  # noqa: E731
    m, s = _standardizer(feats, get, n, device, feature_fn) if standardize else (None, None)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    nets, recipe = Nets.single(head), Recipe()
    g = torch.Generator().manual_seed(int(seed))
    y = y.to(device)
    for _ in range(epochs):
        for idx in batch_order(n, batch_size, g):
            with torch.no_grad():
                f = get(idx)
                if standardize:
                    f = (f - m) / s
            sgd_step(nets, opt, f, y[idx], recipe, lr=lr)
    if standardize:
        with torch.no_grad():
            w = head.weight / s
            head.bias.sub_(w @ m)
            head.weight.copy_(w)
    return head


def fit_finetune(model: LateFusion, target: Target, *, epochs: int, lr: float, batch_size: int, weight_decay: float, seed: int,
                 device, show_progress: bool) -> None:
    """Full fine-tuning by :func:`robustlens.train.train` (Itazuri et al. 2019: 30 epochs, lr 0.001,
    SGD momentum 0.9, constant lr); ``check_size=0``: no held-out part of the target's training
    split; ``log=False``: quiet."""
    cfg = TrainConfig(mode="std", epochs=epochs, lr=lr, batch_size=min(batch_size, len(target.train)), seed=seed,
                      schedule="constant", momentum=0.9, weight_decay=weight_decay, augment=False, check_size=0,
                      progress=show_progress, log=False)
    train(model, target.train, cfg, device=device)
