"""TensorLoader: determinism, resume mid-epoch, sharding, crop+flip against a plain per-image reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustlens.data.base import ImageSet
from robustlens.data.loader import TensorLoader, crop_flip
from robustlens.errors import UserError


def toy(n: int = 50, c: int = 3, h: int = 8, w: int = 10) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 5
    return ImageSet(images, labels, [f"c{i}" for i in range(5)], name="toy")


def reference_crop_flip(images, offsets, flips, padding, mode):
    out = []
    torch_mode = "constant" if mode == "zeros" else "reflect"
    for img, (dy, dx), f in zip(images.float(), offsets.tolist(), flips.tolist()):
        p = F.pad(img.unsqueeze(0), (padding,) * 4, mode=torch_mode)[0]
        crop = p[:, dy : dy + img.shape[1], dx : dx + img.shape[2]]
        out.append(crop.flip(2) if f else crop)
    return torch.stack(out)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_crop_flip_matches_pad_then_slice(mode):
    s = toy()
    g = torch.Generator().manual_seed(1)
    offsets = torch.randint(0, 9, (len(s), 2), generator=g)
    flips = torch.rand(len(s), generator=g) < 0.5
    got = crop_flip(s.images, offsets, flips, 4, mode)
    assert got.dtype == torch.uint8 and got.shape == s.images.shape
    assert torch.equal(got.float(), reference_crop_flip(s.images, offsets, flips, 4, mode))
    # centre offset, no flip = identity
    same = crop_flip(s.images, torch.full((len(s), 2), 4), torch.zeros(len(s), dtype=torch.bool), 4, mode)
    assert torch.equal(same, s.images)


def test_batches_cover_epoch_and_are_deterministic():
    s = toy()
    loader = TensorLoader(s, batch_size=16, seed=3)
    assert len(loader) == 4
    ys = torch.cat([y for _, y in loader.epoch(0)])
    xs = torch.cat([x for x, _ in loader.epoch(0)])
    assert xs.dtype == torch.float32 and 0 <= xs.min() and xs.max() <= 1
    assert sorted((xs * 255).round().to(torch.uint8).flatten(1).sum(1).tolist()) == sorted(
        s.images.flatten(1).long().sum(1).tolist()
    )
    assert torch.bincount(ys).tolist() == [10] * 5
    again = torch.cat([y for _, y in TensorLoader(s, batch_size=16, seed=3).epoch(0)])
    assert torch.equal(ys, again)
    other_epoch = torch.cat([y for _, y in loader.epoch(1)])
    other_seed = torch.cat([x for x, _ in TensorLoader(s, batch_size=16, seed=4).epoch(0)])
    assert not torch.equal(xs, other_seed) and loader.order(0).tolist() != loader.order(1).tolist()
    assert len(other_epoch) == 50
    assert len(TensorLoader(s, batch_size=16, drop_last=True)) == 3
    unshuffled = torch.cat([y for _, y in TensorLoader(s, batch_size=16, shuffle=False)])
    assert torch.equal(unshuffled, s.labels)


@pytest.mark.parametrize("augment", [False, True])
def test_resume_mid_epoch_equals_tail(augment):
    s = toy()
    loader = TensorLoader(s, batch_size=8, seed=5, augment=augment)
    full = list(loader.epoch(2))
    tail = list(loader.epoch(2, start=3))
    assert len(tail) == len(full) - 3
    for (xa, ya), (xb, yb) in zip(full[3:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # iteration = epoch 0, or the epoch set with set_epoch
    assert torch.equal(next(iter(loader))[0], next(loader.epoch(0))[0])
    loader.set_epoch(2)
    assert torch.equal(next(iter(loader))[0], full[0][0])


def test_augment_shapes_and_content():
    s = toy()
    loader = TensorLoader(s, batch_size=50, shuffle=False, augment=True, seed=0)
    x, y = next(loader.epoch(0))
    assert x.shape == (50, 3, 8, 10)
    offsets, flips = loader.augmentation(0, 0, 50)
    ref = reference_crop_flip(s.images, offsets, flips, 4, "zeros") / 255
    assert torch.allclose(x, ref)
    assert flips.any() and (~flips).any()


def test_distributed_shards_are_disjoint_and_equal():
    s = toy(n=53)
    shards = [TensorLoader(s, batch_size=7, seed=1, distributed=(r, 4)) for r in range(4)]
    orders = [sh.order(3) for sh in shards]
    assert all(len(o) == 13 for o in orders) and all(len(sh) == 2 for sh in shards)
    flat = torch.cat(orders)
    assert len(set(flat.tolist())) == 52
    with pytest.raises(UserError):
        TensorLoader(s, batch_size=7, distributed=(4, 4))


def test_bad_arguments():
    s = toy()
    with pytest.raises(UserError, match="batch_size"):
        TensorLoader(s, batch_size=0)
    with pytest.raises(UserError, match="pad_mode"):
        TensorLoader(s, batch_size=4, pad_mode="wrap")
