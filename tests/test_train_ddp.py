"""DistributedDataParallel on CPU: 2 processes, gloo backend, rank 0 writes."""

import json
import socket

import torch
import torch.multiprocessing as mp

from helpers_train import ddp_worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo(tmp_path):
    mp.spawn(ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # DDP keeps the parameters identical on every rank.
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), k
    # Epoch metrics are summed over ranks, so both ranks report the same numbers.
    assert [h["loss"] for h in r0["history"]] == [h["loss"] for h in r1["history"]]
    # Rank 0 wrote the checkpoint, state and metrics (160 images - 16 held out = 144; 144 // 32 = 4 steps).
    assert (tmp_path / "last.safetensors").exists() and (tmp_path / "state.safetensors").exists()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[-1])["step"] == 8
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["run"]["world_size"] == 2 and state["epoch"] == 2


def test_shard_is_disjoint_and_covers_whole_batches():
    from robustlens.train.distributed import DistInfo, shard

    perm = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    parts = [shard(perm, 8, DistInfo(rank=r, world=3)) for r in range(3)]
    assert all(len(p) == 96 // 3 for p in parts)
    joined = torch.cat(parts)
    assert len(set(joined.tolist())) == 96 and set(joined.tolist()) <= set(perm[:96].tolist())
    # Global batch b is the concatenation of every rank's b-th batch.
    b = 2
    glob = torch.cat([p[b * 8 : (b + 1) * 8] for p in parts])
    assert torch.equal(glob, perm[b * 24 : (b + 1) * 24])
