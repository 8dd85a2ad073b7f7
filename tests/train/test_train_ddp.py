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


def test_each_rank_loads_a_disjoint_shard_of_whole_batches():
    """train() hands each rank TensorLoader(distributed=(rank, world)): disjoint, equal shards."""
    from helpers_train import toy_set
    from robustlens.train import TrainConfig
    from robustlens.train.distributed import DistInfo
    from robustlens.train.loop import _make_loader

    data = toy_set(n=103, size=4)
    cfg = TrainConfig(seed=3).resolve("cifar")
    loaders = [_make_loader(data, 8, cfg, torch.device("cpu"), DistInfo(rank=r, world=3)) for r in range(3)]
    assert all(len(lo) == (103 // 3) // 8 for lo in loaders)  # whole batches only (drop_last)
    orders = [lo.order(0) for lo in loaders]
    joined = torch.cat(orders).tolist()
    assert len(joined) == 3 * (103 // 3) and len(set(joined)) == len(joined)
    batches = [next(lo.epoch(0))[1] for lo in loaders]
    assert all(len(b) == 8 for b in batches)
    single = _make_loader(data, 8, cfg, torch.device("cpu"), DistInfo())
    assert single.distributed is None and len(single) == 103 // 8
