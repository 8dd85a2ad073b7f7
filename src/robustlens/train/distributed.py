"""Multi-process training through ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N -m robustlens train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU), and
the loop wraps the model in DDP, gives each rank a disjoint shard of every epoch's
permutation (``TensorLoader(distributed=(rank, world))``), and lets rank 0 alone write checkpoints and logs. ``batch_size`` stays the
global batch: each rank takes ``batch_size // world`` images per step, and DDP averages the
gradients, so one step equals one single-process step on the concatenated batch (up to
batch-norm statistics, which stay per rank as in torchvision's reference scripts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

from robustlens.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    created: bool = False  # this module initialised the process group (and destroys it)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_DETACHED = False


def detach() -> None:
    """From now on this process trains alone, whatever torchrun's variables say.

    ``robustlens study`` under torchrun trains its models with every rank, then lets rank 0
    run the probes by itself (the other ranks exit); later trainings in that process
    (transfer fine-tuning, fresh models on constructed data sets) must not wait for them."""
    global _DETACHED
    _DETACHED = True


def env_world() -> tuple[int, int, int]:
    """(rank, world, local_rank) from torchrun's environment variables (0, 1, 0 without)."""
    if _DETACHED:
        return 0, 1, 0
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UserError("WORLD_SIZE / RANK / LOCAL_RANK: expected integers (set by torchrun)") from None
    return rank, world, local


def setup(device: torch.device, timeout: timedelta | None = None) -> DistInfo:
    """Join the process group when launched by torchrun with ``WORLD_SIZE > 1``.

    ``timeout`` bounds every collective (torch's default: 30 minutes for gloo, 10 for NCCL);
    the study raises it so that ranks can wait while rank 0 decodes a large data set."""
    if dist.is_available() and dist.is_initialized() and not _DETACHED:
        return DistInfo(dist.get_rank(), dist.get_world_size(), env_world()[2], created=False)
    rank, world, local = env_world()
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise UserError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, **({"timeout": timeout} if timeout is not None else {}))
    return DistInfo(rank, world, local, created=True)


def device_for(info: DistInfo, device: torch.device) -> torch.device:
    """On CUDA each rank uses GPU ``LOCAL_RANK``."""
    if info.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", info.local_rank)
    return device


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when running with several processes."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def all_sum(values: Tensor, info: DistInfo) -> Tensor:
    """Sum a tensor over ranks (identity with one process)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0's decision, on every rank (early stopping must agree everywhere)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item() > 0.5)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.created and dist.is_initialized():
        dist.destroy_process_group()
