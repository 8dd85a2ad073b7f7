"""Tiny models and data for the transfer tests (seconds on 2 CPU cores)."""

from __future__ import annotations

import torch

from robustlens.data.base import ImageSet
from robustlens.models import create


def tiny_model(seed: int = 0, num_classes: int = 10, width: int = 8):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = create("small_cnn", num_classes, width=width)
    return m.eval()


def tiny_set(n: int = 40, size: int = 16, num_classes: int = 10, seed: int = 0, channels: int = 3, name: str = "tiny") -> ImageSet:
    """Random images whose mean brightness per channel weakly encodes the label (learnable)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    base = torch.rand((n, channels, size, size), generator=g) * 0.5
    shift = (y.float() / num_classes * 0.5).view(-1, 1, 1, 1)
    img = ((base + shift).clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageSet(img, y, [f"c{i}" for i in range(num_classes)], name=name)
