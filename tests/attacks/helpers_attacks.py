"""Models and data of the attack tests: a tiny adversarially trained model on an easy synthetic
problem, trained here in a few seconds (FGSM with random start, Wong et al. 2020) and cached.

The problem: 10 classes, 3x12x12 images; class c is a fixed random smooth pattern p_c, an
image is ``clip(0.5 + 0.25 p_c + 0.08 noise)``. Clean accuracy is near 100% and the
adversarial training at eps = 16/255 leaves a robust accuracy well between 0 and clean.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.threat import Linf

EPS = 16 / 255
N_CLASSES = 10
SIZE = 12


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)  # the class patterns are fixed
    proto = torch.randn(N_CLASSES, 3, 4, 4, generator=g)
    proto = F.interpolate(proto, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    proto = proto / proto.flatten(1).abs().amax(1).view(-1, 1, 1, 1)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    x = (0.5 + 0.25 * proto[y] + 0.08 * torch.randn(n, 3, SIZE, SIZE, generator=g)).clamp(0, 1)
    return x, y


class TinyNet(nn.Module):
    """conv(16)-ReLU-pool-conv(32)-ReLU-pool-linear: ~10k parameters, logits out."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(32 * (SIZE // 4) ** 2, N_CLASSES)
        self.num_classes = N_CLASSES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body((x - 0.5) / 0.25).flatten(1))


class BNNet(TinyNet):
    """TinyNet behind a BatchNorm: the mode tests set a mixed train / eval state on it."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return super().forward(self.bn(x))


def _train(adversarial: bool, epochs: int = 6) -> TinyNet:
    torch.manual_seed(0)
    x, y = make_data(512, seed=1)
    model = TinyNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    threat = Linf(EPS)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            xb, yb = x[perm[i : i + 64]], y[perm[i : i + 64]]
            if adversarial:  # FGSM-RS: uniform start, one step of 1.25 eps, projected
                xa = threat.random_init(xb, g).requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(model(xa), yb), xa)
                xb = threat.project(xa.detach() + 1.25 * EPS * grad.sign(), xb)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


@functools.lru_cache(maxsize=None)
def adv_model() -> TinyNet:
    """An FGSM-RS adversarially trained TinyNet (eval mode). Do not modify it in tests."""
    return _train(True)


@functools.lru_cache(maxsize=None)
def std_model() -> TinyNet:
    """A standard-trained TinyNet (eval mode)."""
    return _train(False, epochs=4)


@functools.lru_cache(maxsize=None)
def eval_data(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    return make_data(n, seed=2)


EVAL_EPS = 12 / 255  # the trained model's robust accuracy is well between 0 and clean here


def tiny_model(seed: int = 0) -> TinyNet:
    """An untrained TinyNet (eval mode) for property tests: fast and deterministic."""
    torch.manual_seed(seed)
    return TinyNet().eval()
