"""AlexNet (Krizhevsky 2014, *One weird trick for parallelizing convolutional neural networks*,
the single-tower 64-192-384-256-256 variant that torchvision ships) and AlexNet with batch
normalisation (Ioffe & Szegedy 2015) as trained in Itazuri et al. (2022), *What Do
Adversarially Robust Models Look At?*, Sec. 4.

``alexnet`` has exactly torchvision's modules, keys and shapes (``features.{0,3,6,8,10}``
convolutions, ``avgpool`` (6x6 adaptive), ``classifier.{1,4,6}`` linear layers), so
torchvision weights load.

``alexnet_bn`` keeps every torchvision key and shape (convolutions still carry a bias) and
inserts a ``BatchNorm2d`` after each convolution, named after the convolution it follows so
that no torchvision index moves. The state dict therefore differs from torchvision's only by
these 25 added keys::

    features.bn{0,3,6,8,10}.{weight, bias, running_mean, running_var, num_batches_tracked}

(channels 64, 192, 384, 256, 256). Torchvision has no AlexNet-BN, so there are no official
weights for it; the layout lets torchvision AlexNet weights initialise its convolutions and
linear layers (``load_state_dict(..., strict=False)``).

Penultimate features are the 4096-d output of ``classifier[5]`` (the ReLU after the second
fully connected layer); ``head`` is ``classifier[6]``. On this model ``features`` is the
convolutional ``nn.Sequential`` (torchvision's name), not a feature function: use
``penultimate``. Inputs of at least 63x63 pixels work (adaptive pooling to 6x6).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import Tensor, nn

from robustlens.models.base import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier

# (index in torchvision's ``features``, in_channels, out_channels, kernel, stride, padding, max-pool after)
_CONVS = ((0, 3, 64, 11, 4, 2, True), (3, 64, 192, 5, 1, 2, True), (6, 192, 384, 3, 1, 1, False), (8, 384, 256, 3, 1, 1, False), (10, 256, 256, 3, 1, 1, True))


class AlexNet(ImageClassifier):
    """torchvision-layout AlexNet; ``batch_norm=True`` adds BN after every convolution.

    ``dropout`` is torchvision's dropout probability; ``hidden`` the width of the two fully
    connected layers (4096 in the paper and in torchvision; smaller values for CPU tests).
    """

    arch = "alexnet"

    def __init__(
        self,
        num_classes: int = 1000,
        batch_norm: bool = False,
        dropout: float = 0.5,
        hidden: int = 4096,
        in_channels: int = 3,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(mean, std, in_channels)
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        for idx, cin, cout, k, s, p, pool in _CONVS:
            layers[str(idx)] = nn.Conv2d(in_channels if idx == 0 else cin, cout, k, stride=s, padding=p)
            if batch_norm:
                layers[f"bn{idx}"] = nn.BatchNorm2d(cout)
            layers[str(idx + 1)] = nn.ReLU(inplace=True)
            if pool:
                layers[str(idx + 2)] = nn.MaxPool2d(3, stride=2)
        self._modules["features"] = nn.Sequential(layers)  # bypasses the ``features`` property
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        self.num_features = hidden

    @property
    def features(self) -> nn.Sequential:  # type: ignore[override]
        """The convolutional stack (torchvision's ``features``)."""
        return self._modules["features"]  # type: ignore[return-value]

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x)).flatten(1)
        for layer in list(self.classifier)[:6]:
            x = layer(x)
        return x

    @property
    def head(self) -> nn.Linear:
        return self.classifier[6]  # type: ignore[return-value]
