"""The model contract every robustlens classifier follows.

* ``forward(x)`` takes float images in [0, 1], NCHW, and returns logits: the input
  normalisation is the model's first layer (:class:`Normalize`), so attacks and saliency
  work in pixel space.
* ``penultimate(x)`` returns the features (N, F) that feed the final linear layer
  (late fusion, representation inversion, neuron analysis use it).
* ``head`` is that final ``nn.Linear``; ``first_conv`` the first convolution (filter grids);
  ``num_features`` is F; ``arch`` the registry name; ``config`` the keyword arguments
  :func:`robustlens.models.create` built it with (checkpoints rebuild the model from them).
* Subclasses implement ``forward_features(x)`` (normalised input -> (N, F)). ``features(x)``
  is kept as an alias on every model except AlexNet, where ``features`` is the convolutional
  ``nn.Sequential`` (torchvision's layout); use ``penultimate`` in generic code.

Normalisation statistics are non-persistent buffers: they are kept out of the state dict,
so state-dict keys match torchvision's, and live in the checkpoint's JSON sidecar instead.

Every family takes ``in_channels`` (3 by default). A single-channel model gets a
single-channel :class:`Normalize`: a family's 3-channel default statistics become their
channel means (ImageNet's mean 0.449, std 0.226), the statistics of the greyscale image
``(r + g + b) / 3`` to first order; statistics given with one value per input channel are kept.
"""

from __future__ import annotations

import abc
import math
from typing import Sequence

import torch
from torch import Tensor, nn

from robustlens.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


def channel_stats(mean: Sequence[float], std: Sequence[float], in_channels: int) -> tuple[list[float], list[float]]:
    """Per-channel statistics for an ``in_channels`` input: kept when they have one value per
    channel, a single value repeated, 3-channel statistics averaged for a 1-channel input."""
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise UserError(f"in_channels: expected a positive integer, got {in_channels!r}")
    mean, std = _check_stats(mean, std)
    if len(mean) == in_channels:
        return mean, std
    if len(mean) == 1:
        return mean * in_channels, std * in_channels
    if in_channels == 1 and len(mean) == 3:
        return [sum(mean) / 3], [sum(std) / 3]
    raise UserError(f"normalisation: {len(mean)} mean/std values for a {in_channels}-channel input; give {in_channels} (or 1)")


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[list[float], list[float]]:
    """Validate per-channel statistics as plain floats (works under a ``meta`` device context)."""
    try:
        mean = [float(v) for v in torch.as_tensor(mean, device="cpu").flatten().tolist()]
        std = [float(v) for v in torch.as_tensor(std, device="cpu").flatten().tolist()]
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"normalisation: mean and std must be lists of numbers, got {mean!r} and {std!r}") from None
    if not all(math.isfinite(v) for v in mean + std):
        raise UserError(f"normalisation: mean and std must be finite, got {mean} and {std}")
    if len(mean) != len(std) or not mean:
        raise UserError(f"normalisation: mean and std need the same non-zero length, got {mean} and {std}")
    if any(not (v > 0) for v in std):
        raise UserError(f"normalisation: std must be positive, got {std}")
    return mean, std


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; the first layer of every robustlens model."""

    def __init__(self, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)) -> None:
        super().__init__()
        mean, std = _check_stats(mean, std)
        mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def set(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Replace the statistics in place (e.g. from a checkpoint sidecar)."""
        mean, std = _check_stats(mean, std)
        if len(mean) != self.mean.numel():
            raise UserError(f"normalisation: expected {self.mean.numel()} channels, got mean/std of length {len(mean)}")
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype).view(1, -1, 1, 1))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype).view(1, -1, 1, 1))

    def to_dict(self) -> dict:
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def extra_repr(self) -> str:
        return f"mean={[round(v, 4) for v in self.mean.flatten().tolist()]}, std={[round(v, 4) for v in self.std.flatten().tolist()]}"


class ImageClassifier(nn.Module, abc.ABC):
    """Base class: subclasses define ``features`` (normalised input -> (N, F)) and ``head``."""

    arch: str = ""
    num_features: int = 0

    def __init__(self, mean: Sequence[float], std: Sequence[float], in_channels: int = 3) -> None:
        super().__init__()
        self.normalize = Normalize(*channel_stats(mean, std, in_channels))
        self.config: dict = {}

    @abc.abstractmethod
    def forward_features(self, x: Tensor) -> Tensor:
        """Penultimate features (N, F) from an already normalised input."""

    def features(self, x: Tensor) -> Tensor:
        """Alias of :meth:`forward_features` (AlexNet replaces it with its conv stack)."""
        return self.forward_features(x)

    @property
    @abc.abstractmethod
    def head(self) -> nn.Linear:
        """The final linear layer (features -> logits)."""

    @property
    def first_conv(self) -> nn.Conv2d:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                return m
        raise AttributeError(f"{type(self).__name__} has no convolution")

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def penultimate(self, x: Tensor) -> Tensor:
        """Features (N, F) feeding the final linear layer, from images in [0, 1]."""
        return self.forward_features(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.penultimate(x))
