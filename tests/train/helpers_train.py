"""Tiny learnable problems for the training tests (fast on 2 CPU cores)."""

from __future__ import annotations

import torch

from robustlens.data.base import ImageSet
from robustlens.models import create


def toy_set(n: int = 256, classes: int = 4, size: int = 12, seed: int = 0, name: str = "toy") -> ImageSet:
    """Each class is a brightness level plus a class-specific quadrant, with noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    y = y[torch.randperm(n, generator=g)]
    x = torch.rand(n, 3, size, size, generator=g) * 0.3 + 0.1 + 0.1 * y.view(-1, 1, 1, 1).float() / classes
    h = size // 2
    for c in range(classes):
        r, q = divmod(c, 2)
        sel = y == c
        x[sel, :, r * h : (r + 1) * h, q * h : (q + 1) * h] += 0.4
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageSet(images, y, [f"c{i}" for i in range(classes)], name=name)


def toy_model(classes: int = 4, seed: int = 0, width: int = 4):
    torch.manual_seed(seed)
    return create("small_cnn", classes, width=width)


def ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """One rank of the 2-process gloo test (run by torch.multiprocessing.spawn)."""
    import os

    from robustlens.train import TrainConfig, train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    model = toy_model()
    cfg = TrainConfig(mode="fgsm-rs", epochs=2, batch_size=32, lr=0.05, check_size=16, check_steps=2,
                      log=False, progress=False)
    result = train(model, toy_set(n=160, size=12), cfg, out_dir=out_dir, device="cpu")
    torch.save({"params": {k: v.detach().contiguous() for k, v in model.named_parameters()},
                "history": result.history}, os.path.join(out_dir, f"rank{rank}.pt"))


def strokes_set(n: int = 768, size: int = 16, noise: float = 0.2, contrast: float = 0.8, seed: int = 0) -> ImageSet:
    """A 1-channel digits-like set: the class is a stroke (horizontal, vertical, two diagonals)
    of brightness ``contrast`` over uniform noise in [0, ``noise``], at a random offset of up to
    3 px. At eps 0.3 a robust classifier exists (stroke pixels stay >= 0.5 above the attacked
    background only on average), and FGSM training overfits catastrophically within 3 epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 1, size, size, generator=g) * noise
    off = torch.randint(-3, 4, (n,), generator=g)
    t = torch.arange(2, size - 2)
    for i in range(n):
        c, k, o = size // 2 + int(off[i]), int(y[i]), int(off[i])
        if k == 0:
            x[i, 0, c - 1 : c + 1, 2:-2] += contrast
        elif k == 1:
            x[i, 0, 2:-2, c - 1 : c + 1] += contrast
        else:
            cols = (t + o) if k == 2 else (size - 1 - t + o)
            x[i, 0, t, cols.clamp(0, size - 1)] += contrast
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageSet(images, y, ["horizontal", "vertical", "diagonal", "antidiagonal"], name="strokes")
