"""A small 4-layer CNN for CPU work (the embedded procedural data set, tests, tutorials).

Four 3x3 conv-BN-ReLU blocks (widths ``w, 2w, 4w, 4w``), max-pooling after the first
three, global average pooling and one linear layer. About 0.3 M parameters at ``w=32``;
runs on any input size >= 8 pixels.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from robustlens.models.base import ImageClassifier


def _block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers


class SmallCNN(ImageClassifier):
    arch = "small_cnn"

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 32,
        in_channels: int = 3,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
    ) -> None:
        super().__init__(mean, std, in_channels)
        w = width
        self.body = nn.Sequential(
            *_block(in_channels, w, True),
            *_block(w, 2 * w, True),
            *_block(2 * w, 4 * w, True),
            *_block(4 * w, 4 * w, False),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)
        self.num_features = 4 * w

    def forward_features(self, x: Tensor) -> Tensor:
        return self.pool(self.body(x)).flatten(1)

    @property
    def head(self) -> nn.Linear:
        return self.fc
