"""Tiny fixtures for the probes tests: a hand-made ImageSet with factors and masks, tiny models."""

from __future__ import annotations

import torch
from torch import nn

from robustlens.data.base import ImageSet


def tiny_set(n: int = 12, size: int = 12, classes: int = 3, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)
    labels = torch.arange(n) % classes
    factors = torch.stack([labels, (labels + 1) % classes, torch.randint(classes, (n,), generator=g)], 1)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[:, 2:-2, 3:-3] = True
    return ImageSet(images=images, labels=labels, classes=[f"c{i}" for i in range(classes)], name="tiny",
                    factors=factors, factor_names=("shape", "texture", "colour"), masks=masks)


class MeanColour(nn.Module):
    """Predicts from the mean of each channel (a fixed linear map): simple, deterministic."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, classes)
        torch.manual_seed(0)
        for p in self.parameters():
            nn.init.normal_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))
