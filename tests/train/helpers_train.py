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
