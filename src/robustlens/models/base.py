"""The model contract every robustlens classifier follows.

* ``forward(x)`` takes float images in [0, 1], NCHW, and returns logits: the input
  normalisation is the model's first layer (:class:`Normalize`), so attacks and saliency
  work in pixel space.
* ``penultimate(x)`` returns the features (N, F) that feed the final linear layer
  (late fusion, representation inversion, neuron analysis use it).
* ``head`` is that final ``nn.Linear``; ``first_conv`` the first convolution (filter grids);
  ``num_features`` is F; ``arch`` the registry name.

Normalisation statistics are non-persistent buffers: they are kept out of the state dict,
so state-dict keys match torchvision's, and live in the checkpoint's JSON sidecar instead.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; the first layer of every robustlens model."""

    def __init__(self, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        if bool((std_t <= 0).any()):
            raise ValueError(f"Normalize: std must be positive, got {list(std)}")
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def set(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Replace the statistics in place (e.g. from a checkpoint sidecar)."""
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype).view(1, -1, 1, 1))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype).view(1, -1, 1, 1))

    def to_dict(self) -> dict:
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def extra_repr(self) -> str:
        return f"mean={[round(v, 4) for v in self.mean.flatten().tolist()]}, std={[round(v, 4) for v in self.std.flatten().tolist()]}"


class ImageClassifier(nn.Module):
    """Base class: subclasses define ``features`` (normalised input -> (N, F)) and ``head``."""

    arch: str = ""
    num_features: int = 0

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Penultimate features from an already normalised input."""
        raise NotImplementedError

    @property
    def head(self) -> nn.Linear:  # pragma: no cover - abstract
        raise NotImplementedError

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
        return self.features(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.penultimate(x))
