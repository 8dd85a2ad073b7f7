"""What a fusion study reads: pre-trained backbones (models or checkpoints) and target data
sets (train and test splits at one resolution), and the checks that they fit together."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from robustlens.errors import UserError
from robustlens.evalmode import eval_mode
from robustlens.models.base import ImageClassifier
from robustlens.models.checkpoint import load_checkpoint


@dataclass
class Backbone:
    """A pre-trained model with its provenance (the checkpoint path, or ``None``)."""

    model: ImageClassifier
    kind: str
    index: int
    source: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.model.first_conv.in_channels)

    @property
    def input_size(self) -> int | None:
        """The side the backbone was trained at, when its checkpoint sidecar records it.

        Looks for ``input_size`` / ``image_size`` / ``resolution`` (top level, ``training``,
        ``data``), else a ``size=N`` in the training data's source string; ``None`` if unknown.
        """
        for key in ("input_size", "image_size", "resolution"):
            for where in (self.meta, self.meta.get("training", {}) or {}, self.meta.get("data", {}) or {}):
                v = where.get(key) if isinstance(where, dict) else None
                if v is not None:
                    return int(v[0] if isinstance(v, (list, tuple)) else v)
        data = self.meta.get("data")
        if isinstance(data, str):
            m = re.search(r"size=(\d+)", data)
            if m:
                return int(m.group(1))
        return None


def load_backbone(entry: Any, kind: str, index: int, device: torch.device | str = "cpu") -> Backbone:
    """A model, or a checkpoint path read with ``robustlens.models.checkpoint.load_checkpoint``."""
    if isinstance(entry, Backbone):
        return entry
    if isinstance(entry, nn.Module):
        return Backbone(entry.to(device), kind, index, source=f"<{type(entry).__name__} object>")
    path = Path(entry)
    if not path.exists():
        raise UserError(f"--backbone {kind}={path}: file not found")
    model, meta = load_checkpoint(path, device=device)
    return Backbone(model, kind, index, source=str(path), meta=dict(meta or {}))


def check_backbones(backbones: Sequence[Backbone]) -> None:
    """All backbones of one study must agree on input channels, source classes and input size."""
    if not backbones:
        raise UserError("--backbone: no backbone given; expected e.g. --backbone std=A.safetensors --backbone adv=B.safetensors")
    ref = backbones[0]
    for b in backbones[1:]:
        name = f"--backbone {b.kind}={b.source}"
        if b.in_channels != ref.in_channels:
            raise UserError(f"{name}: takes {b.in_channels}-channel input but {ref.kind}={ref.source} takes {ref.in_channels}")
        if b.model.num_classes != ref.model.num_classes:
            raise UserError(
                f"{name}: trained on {b.model.num_classes} classes but {ref.kind}={ref.source} on "
                f"{ref.model.num_classes}; backbones of one study must share their source task"
            )
        if b.input_size is not None and ref.input_size is not None and b.input_size != ref.input_size:
            raise UserError(
                f"{name}: trained at {b.input_size}px but {ref.kind}={ref.source} at {ref.input_size}px; "
                "backbones of one study must share their input size"
            )


# ----------------------------------------------------------------------------- targets


@dataclass
class Target:
    """A target data set: train and test splits at one resolution."""

    name: str
    train: Any  # ImageSet
    test: Any  # ImageSet
    source: str = ""

    @property
    def resolution(self) -> int:
        return int(self.train.resolution[0])

    @property
    def label(self) -> str:
        return f"{self.name} {self.resolution}px"


def _source_name(source: str) -> str:
    s = str(source)
    base = s.split(":", 1)[0] if ":" in s and not Path(s).exists() else s
    return Path(base).name.split(".")[0] or base


def load_target(source: Any, size: int | None = None, **options) -> Target:
    """``(source, size)`` -> train/test splits via ``robustlens.data.load(source, split, size=size)``."""
    if isinstance(source, Target):
        return source
    if isinstance(source, tuple) and len(source) == 3:  # (name, train ImageSet, test ImageSet)
        return Target(str(source[0]), source[1], source[2], source=str(source[0]))
    from robustlens.data import load

    train = load(str(source), split="train", size=size, **options)
    test = load(str(source), split="test", size=size, **options)
    return Target(_source_name(str(source)), train, test, source=str(source))


def check_target(target: Target, backbones: Sequence[Backbone]) -> None:
    for split, data in (("train", target.train), ("test", target.test)):
        if len(data) == 0:
            raise UserError(f"--target {target.source or target.name}: the {split} split is empty")
    ch = backbones[0].in_channels
    if target.train.channels != ch or target.test.channels != ch:
        raise UserError(f"--target {target.source or target.name}: {target.train.channels}-channel images, but the backbones take {ch} channels")
    if target.train.resolution != target.test.resolution:
        raise UserError(f"--target {target.source or target.name}: train is {target.train.resolution} but test {target.test.resolution}; use one size")
    if target.train.num_classes != target.test.num_classes:
        raise UserError(f"--target {target.source or target.name}: train has {target.train.num_classes} classes but test {target.test.num_classes}")
    probe = target.train.float(slice(0, 1))
    for b in backbones:
        try:
            with torch.no_grad(), eval_mode(b.model):
                b.model.penultimate(probe.to(next(b.model.parameters()).device))
        except RuntimeError as e:
            raise UserError(
                f"--target {target.source or target.name}: backbone {b.kind}={b.source} cannot take "
                f"{target.resolution}px input ({str(e).splitlines()[0]})"
            ) from None
