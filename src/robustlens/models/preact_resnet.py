"""PreActResNet-18 for 32x32 inputs, as in Wong, Rice & Kolter (2020), *Fast is better than
free* (code: ``locuslab/fast_adversarial``, ``preact_resnet.py``), after He et al. (2016),
*Identity Mappings in Deep Residual Networks* (pre-activation blocks: BN -> ReLU -> conv).

State-dict keys follow fast_adversarial exactly (``conv1``, ``layer1.0.bn1``, ...,
``layer2.0.shortcut.0``, ``bn``, ``linear``), so its checkpoints import. Differences from
that code, none of which change the weights: the input is normalised inside the model
(CIFAR-10 statistics by default; fast_adversarial used mean (0.4914, 0.4822, 0.4471)),
the final ``avg_pool2d(out, 4)`` is an adaptive average pool (identical at 32x32, and any
input size works), and every ReLU is its own ``nn.ReLU`` module (guided backprop).

RobustBench's ``Wong2020Fast`` (``robustbench/model_zoo/cifar10.py``: ``PreActResNet(PreActBlock,
[2, 2, 2, 2])``) is the same network in another variant: no final ``bn`` (so its state dict has
no ``bn.*`` keys) and the projection shortcut applied to the block's raw input rather than to
its activated input. ``final_bn=False, shortcut_from="input"`` builds that variant.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from robustlens.errors import UserError
from robustlens.models.base import CIFAR10_MEAN, CIFAR10_STD, ImageClassifier


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b, Fig. 1b): x + conv(relu(bn(conv(relu(bn(x))))))."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut_from: str = "activated") -> None:
        super().__init__()
        self.shortcut_from = shortcut_from
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.has_shortcut = stride != 1 or in_planes != planes
        if self.has_shortcut:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(x))
        if not self.has_shortcut:
            shortcut = x
        else:
            shortcut = self.shortcut(out if self.shortcut_from == "activated" else x)
        out = self.conv1(out)
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + shortcut


class PreActResNet(ImageClassifier):
    """PreActResNet with a 3x3 stem (CIFAR); ``num_blocks=(2, 2, 2, 2)`` is PreActResNet-18."""

    arch = "preact_resnet18"

    def __init__(
        self,
        num_classes: int = 10,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        in_channels: int = 3,
        final_bn: bool = True,
        shortcut_from: str = "activated",
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        super().__init__(mean, std, in_channels)
        if shortcut_from not in ("activated", "input"):
            raise UserError(f"shortcut_from: expected 'activated' (fast_adversarial) or 'input' (RobustBench's PreActBlock), got {shortcut_from!r}")
        self.shortcut_from = shortcut_from
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.final_bn = bool(final_bn)
        if self.final_bn:
            self.bn = nn.BatchNorm2d(512)
            self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)
        self.num_features = 512

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(PreActBlock(self.in_planes, planes, s, self.shortcut_from))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if self.final_bn:
            out = self.relu(self.bn(out))
        return self.avgpool(out).flatten(1)

    @property
    def head(self) -> nn.Linear:
        return self.linear
