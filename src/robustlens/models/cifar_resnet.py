"""ResNet-50 with the CIFAR stem (He et al. 2016, *Deep Residual Learning for Image
Recognition*; the 3x3 stride-1 stem of the CIFAR ResNets in ``kuangliu/pytorch-cifar``), in the
layout RobustBench (``robustbench/model_zoo/architectures/resnet.py``, ``ResNet(Bottleneck,
[3, 4, 6, 3])``) and MadryLab's robustness library (``robustness/cifar_models/resnet.py``) use
for ``Engstrom2019Robustness``, so their state dicts load key for key.

Keys: ``conv1`` (3x3, 64), ``bn1``, ``layer1..layer4`` of bottlenecks ``conv1/bn1`` (1x1),
``conv2/bn2`` (3x3, carries the stride), ``conv3/bn3`` (1x1, 4x expansion) and, where the
width or stride changes, ``shortcut.0`` (1x1 conv) / ``shortcut.1`` (BN); then ``linear``.
Differences that leave the weights unchanged: the input is normalised inside the model (the
robustness library's CIFAR statistics by default), ``avg_pool2d(out, 4)`` is an adaptive pool
(identical at 32x32), and each ReLU is its own module (guided backprop).
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from robustlens.models.base import ImageClassifier

# robustness/datasets.py CIFAR (and RobustBench's Engstrom2019RobustnessNet mu / sigma)
ROBUSTNESS_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
ROBUSTNESS_CIFAR_STD = (0.2023, 0.1994, 0.2010)


class CifarBottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 (x4) with a projection ``shortcut`` where the shape changes."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu3 = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


class CifarResNet(ImageClassifier):
    """CIFAR-stem bottleneck ResNet; ``num_blocks=(3, 4, 6, 3)`` is ResNet-50."""

    arch = "cifar_resnet50"

    def __init__(
        self,
        num_classes: int = 10,
        num_blocks: Sequence[int] = (3, 4, 6, 3),
        in_channels: int = 3,
        mean: Sequence[float] = ROBUSTNESS_CIFAR_MEAN,
        std: Sequence[float] = ROBUSTNESS_CIFAR_STD,
    ) -> None:
        super().__init__(mean, std, in_channels)
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 512 * CifarBottleneck.expansion
        self.linear = nn.Linear(self.num_features, num_classes)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(CifarBottleneck(self.in_planes, planes, s))
            self.in_planes = planes * CifarBottleneck.expansion
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.avgpool(out).flatten(1)

    @property
    def head(self) -> nn.Linear:
        return self.linear
