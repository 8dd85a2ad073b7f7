"""Training: standard and adversarial (FGSM, FGSM-RS, PGD, TRADES) in one readable loop.

``config`` (:class:`TrainConfig`, per-data-set defaults), ``schedule`` (learning rate as a
function of the step), ``step`` (:func:`sgd_step`: the one optimiser step every fit shares,
configured by a :class:`Recipe`), ``loop`` (:func:`train`), ``state`` (checkpoints and the
resumable state), ``distributed`` (DDP helpers).

    from robustlens.train import train, TrainConfig, train_model
    model, result = train_model("trifeature", "small_cnn", mode="fgsm-rs", eps="8/255")
    result = train(model, train_set, TrainConfig(mode="pgd", epochs=10), out_dir="runs/pgd")
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from robustlens.train.config import ADVERSARIAL_MODES, DEFAULTS, MODES, SCHEDULES, TrainConfig
from robustlens.train.loop import TrainResult, make_optimizer, save_model, train
from robustlens.train.schedule import Schedule
from robustlens.train.step import EpochMeter, Nets, Recipe, StepOutput, perturb, perturb_trades, sgd_step

__all__ = [
    "ADVERSARIAL_MODES",
    "DEFAULTS",
    "MODES",
    "SCHEDULES",
    "EpochMeter",
    "Nets",
    "Recipe",
    "Schedule",
    "StepOutput",
    "TrainConfig",
    "TrainResult",
    "make_optimizer",
    "perturb",
    "perturb_trades",
    "save_model",
    "sgd_step",
    "train",
    "train_model",
]

# Model options that make the default arch fit the embedded data set's budget (2 CPU cores).
ARCH_DEFAULTS: dict[tuple[str, str], dict] = {
    ("trifeature", "small_cnn"): {"width": 16},
}


def train_model(
    data: str = "trifeature",
    arch: str = "small_cnn",
    mode: str = "std",
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    device: str | None = None,
    model_kwargs: dict | None = None,
    val_split: str | None = None,
    **config,
) -> tuple[nn.Module, TrainResult]:
    """Load ``data`` (train split), build ``arch`` and train it; returns ``(model, result)``.

    ``config`` holds :class:`TrainConfig` fields (``eps="8/255"``, ``epochs=...``). The model's
    initial weights come from ``torch.manual_seed(seed)``. ``val_split`` names a split used
    for the per-epoch check (default: a held-out part of the training split).
    """
    import torch

    from robustlens.data import load
    from robustlens.models import create
    from robustlens.train.config import data_kind

    train_set = load(data, split="train")
    val_set = load(data, split=val_split) if val_split else None
    kind = data_kind(train_set.name or data, train_set.resolution, train_set.channels)
    kw = dict(ARCH_DEFAULTS.get((kind, arch), {}))
    if train_set.channels != 3:
        kw["in_channels"] = train_set.channels
    kw.update(model_kwargs or {})
    cfg = TrainConfig(mode=mode, **config)
    torch.manual_seed(cfg.seed)
    model = create(arch, train_set.num_classes, **kw)
    result = train(model, train_set, cfg, out_dir=out_dir, val_set=val_set, resume=resume, device=device)
    return model, result
