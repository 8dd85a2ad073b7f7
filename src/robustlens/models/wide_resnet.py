"""Wide residual networks (Zagoruyko & Komodakis 2016, *Wide Residual Networks*), WRN-d-k, in the
layout of TRADES (Zhang et al. 2019) and RobustBench (Croce et al. 2021,
``robustbench/model_zoo/architectures/wide_resnet.py``), so RobustBench state dicts load.

Keys: ``conv1``, ``block{1,2,3}.layer.{i}.{bn1, conv1, bn2, conv2, convShortcut}``, ``bn1``,
``fc``. Blocks are pre-activation; where the width or stride changes, the shortcut (a 1x1
``convShortcut``) is taken from the activated input, as in the original code. Differences
that leave the weights unchanged: the input is normalised inside the model (CIFAR-10
statistics by default; RobustBench models expect raw [0, 1] input, so import them with
``mean=(0, 0, 0), std=(1, 1, 1)``), the final ``avg_pool2d(out, 8)`` is an adaptive pool
(identical at 32x32, any size works), and the top ReLU is ``relu``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from robustlens.errors import UserError
from robustlens.models.base import CIFAR10_MEAN, CIFAR10_STD, ImageClassifier


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3 twice (Zagoruyko & Komodakis 2016, Fig. 1c/d) with optional dropout between."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.equal_in_out else self.convShortcut(act)  # type: ignore[misc]
        return shortcut + out


class NetworkBlock(nn.Module):
    """``nb_layers`` wide blocks; the first changes width and stride (key prefix ``layer.``)."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate) for i in range(nb_layers)]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(ImageClassifier):
    """WRN-depth-widen_factor: (depth - 4) / 6 blocks per stage, widths 16k, 32k, 64k."""

    arch = "wrn28_10"

    def __init__(
        self,
        num_classes: int = 10,
        depth: int = 28,
        widen_factor: int = 10,
        drop_rate: float = 0.0,
        in_channels: int = 3,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        super().__init__(mean, std, in_channels)
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
            raise UserError(f"depth: a WideResNet needs depth = 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth!r}")
        if not isinstance(widen_factor, int) or widen_factor < 1:
            raise UserError(f"widen_factor: expected a positive integer, got {widen_factor!r}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch[3], num_classes)
        self.num_features = ch[3]
        for m in self.modules():  # initialisation of the TRADES / RobustBench code
            if isinstance(m, nn.Conv2d) and not m.weight.is_meta:  # (normal_ on meta imports torch._dynamo)
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward_features(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.avgpool(out).flatten(1)

    @property
    def head(self) -> nn.Linear:
        return self.fc
