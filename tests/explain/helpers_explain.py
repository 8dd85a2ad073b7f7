"""Shared fixtures for the explain tests: tiny models, a briefly trained one, ReLU variants."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.models import create


def small_model(seed: int = 0, dtype: torch.dtype = torch.float64, num_classes: int = 10) -> nn.Module:
    """An untrained small_cnn (width 8), eval mode."""
    torch.manual_seed(seed)
    return create("small_cnn", num_classes, width=8).to(dtype).eval()


@functools.lru_cache(maxsize=4)
def _trained_state(seed: int, n: int, steps: int, adv_eps: float):
    from robustlens.data import load

    data = load(f"trifeature:n_train={n},n_test=64,seed=3,contrast=0.18", split="train", size=32)
    torch.manual_seed(seed)
    model = create("small_cnn", data.num_classes, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    x_all, y_all = data.float(), data.labels
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(data), (64,), generator=g)
        x, y = x_all[idx], y_all[idx]
        if adv_eps > 0:  # FGSM with random start (Wong et al. 2020), L-inf
            d = (torch.rand(x.shape, generator=g) * 2 - 1) * adv_eps
            xa = (x + d).requires_grad_(True)
            (gr,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
            x = (x + (d + 1.25 * adv_eps * gr.sign()).clamp(-adv_eps, adv_eps)).clamp(0, 1).detach()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return {k: v.clone() for k, v in model.state_dict().items()}, data.num_classes


def trained_model(seed: int = 0, n: int = 512, steps: int = 60, adv_eps: float = 0.0, dtype=torch.float64) -> nn.Module:
    """small_cnn (width 8) trained for ``steps`` Adam steps on a small procedural set."""
    state, k = _trained_state(seed, n, steps, adv_eps)
    model = create("small_cnn", k, width=8)
    model.load_state_dict(state)
    return model.to(dtype).eval()


@functools.lru_cache(maxsize=2)
def procedural_test_set(n: int = 16, size: int = 32):
    from robustlens.data import load

    return load(f"trifeature:n_train=16,n_test={n},seed=3,contrast=0.18", split="test", size=size)


class _Base(nn.Module):
    """conv-relu-conv-relu-pool-linear with four ReLU styles and the same weights."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def tail(self, h):
        return self.fc(F.adaptive_avg_pool2d(h, 4).flatten(1))


class ModuleReLU(_Base):
    def __init__(self) -> None:
        super().__init__()
        self.r1, self.r2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        return self.tail(self.r2(self.c2(self.r1(self.c1(x)))))


class ReusedReLU(_Base):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x):
        return self.tail(self.act(self.c2(self.act(self.c1(x)))))


class InplaceReLU(_Base):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.act(self.c1(x))
        h = self.c2(h)
        h.relu_()  # in-place method, result relied upon through h
        return self.tail(h)


class FunctionalReLU(_Base):
    def forward(self, x):
        h = F.relu(self.c1(x))
        return self.tail(torch.relu(self.c2(h)))


RELU_STYLES = (ModuleReLU, ReusedReLU, InplaceReLU, FunctionalReLU)


def relu_variants(seed: int = 0, dtype=torch.float64) -> list[nn.Module]:
    torch.manual_seed(seed)
    ref = ModuleReLU()
    out = []
    for cls in RELU_STYLES:
        m = cls()
        m.load_state_dict(ref.state_dict(), strict=False)
        out.append(m.to(dtype).eval())
    return out
