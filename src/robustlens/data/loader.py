"""Batches from a whole data set held as one tensor (CPU or CUDA), with augmentation on tensors.

The training recipes of the seeds (Madry et al. 2018; Wong et al. 2020 "Fast is better than
free"; Keller Jordan's airbench) use the standard CIFAR augmentation: a random crop of the
image padded by 4 pixels, and a random horizontal flip. Here both are done for a whole batch
at once as one gather on the uint8 images (no per-image loop, no padded copy), and every
random choice comes from ``(seed, epoch, batch index)``, so

* the same seed gives the same batches on CPU and CUDA;
* ``loader.epoch(e, start=k)`` yields exactly the batches ``k, k+1, ...`` of ``loader.epoch(e)``
  (resume mid-epoch without replaying it);
* ``distributed=(rank, world_size)`` splits each epoch's permutation into disjoint, equal-size
  shards (the tail that does not divide evenly is dropped for that epoch).

For sets too big for memory, :class:`FileLoader` reads image files with ``torch.utils.data``
worker processes and yields the same batches (same order, same augmentation) as a
:class:`TensorLoader` over the decoded set.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from robustlens.data.base import ImageSet
from robustlens.errors import UserError

PAD_MODES = ("zeros", "reflect")


def _generator(seed: int, *stream: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(s) for s in stream]]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _reflect(idx: Tensor, n: int) -> Tensor:
    """Reflect indices into ``[0, n)`` without repeating the edge (numpy/torch 'reflect')."""
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


def crop_flip(
    images: Tensor, offsets: Tensor, flips: Tensor, padding: int = 4, pad_mode: str = "zeros"
) -> Tensor:
    """Random-crop-with-padding and horizontal flip of a batch, as one gather.

    Equivalent to padding every image by ``padding`` on each side (zeros or reflection), taking
    the ``H x W`` window at ``offsets[i] = (dy, dx)`` (each in ``0..2*padding``), then flipping
    left-right where ``flips[i]``.

    Args:
        images: (B, C, H, W) any dtype, any device.
        offsets: (B, 2) int64 (dy, dx); flips: (B,) bool.
    """
    if pad_mode not in PAD_MODES:
        raise UserError(f"pad_mode={pad_mode!r}: expected one of {', '.join(PAD_MODES)}")
    B, C, H, W = images.shape
    dev = images.device
    offsets = offsets.to(dev)
    flips = flips.to(dev)
    ar_h = torch.arange(H, device=dev)
    ar_w = torch.arange(W, device=dev)
    rows = offsets[:, 0:1] - padding + ar_h  # (B, H) source row of each output row
    cols_fwd = offsets[:, 1:2] - padding + ar_w  # (B, W)
    cols = torch.where(flips.view(B, 1), cols_fwd.flip(1), cols_fwd)
    if pad_mode == "reflect":
        rows, cols = _reflect(rows, H), _reflect(cols, W)
        valid = None
    else:
        valid = ((rows >= 0) & (rows < H)).view(B, 1, H, 1) & ((cols >= 0) & (cols < W)).view(B, 1, 1, W)
        rows, cols = rows.clamp(0, H - 1), cols.clamp(0, W - 1)
    flat = (rows.view(B, H, 1) * W + cols.view(B, 1, W)).view(B, 1, H * W).expand(B, C, H * W)
    out = images.reshape(B, C, H * W).gather(2, flat).view(B, C, H, W)
    if valid is not None:
        out = out * valid.to(out.dtype)
    return out


class TensorLoader:
    """Mini-batches of an :class:`ImageSet` kept whole on ``device`` (uint8; float per batch).

    Args:
        imageset: the data.
        batch_size: images per batch.
        shuffle: a new permutation every epoch (from ``seed`` and the epoch number).
        seed: seed of every random choice (order and augmentation).
        augment: random crop with ``padding`` (``pad_mode`` "zeros" or "reflect") + flip.
        device: where the images live and batches are made ("cpu", "cuda", ...).
        drop_last: drop the last incomplete batch.
        distributed: ``(rank, world_size)``: this rank's shard of every epoch.
        padding, pad_mode: crop padding in pixels and how the border is filled.

    ``len(loader)`` is the number of batches per epoch; ``loader.epoch(e, start=0)`` yields
    ``(x, y)``: x float32 in [0, 1] (B, C, H, W) on ``device``, y int64 (B,). Iterating the loader
    gives the epoch set by :meth:`set_epoch` (0 unless set).
    """

    def __init__(
        self,
        imageset: ImageSet,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        augment: bool = False,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        distributed: tuple[int, int] | None = None,
        padding: int = 4,
        pad_mode: str = "zeros",
    ) -> None:
        if int(batch_size) <= 0:
            raise UserError(f"batch_size={batch_size!r}: expected a positive integer")
        if pad_mode not in PAD_MODES:
            raise UserError(f"pad_mode={pad_mode!r}: expected one of {', '.join(PAD_MODES)}")
        if padding < 0:
            raise UserError(f"padding={padding!r}: expected a non-negative integer")
        if distributed is not None:
            rank, world = distributed
            if not (world >= 1 and 0 <= rank < world):
                raise UserError(f"distributed={distributed!r}: expected (rank, world_size) with 0 <= rank < world_size")
        self.imageset = imageset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.augment = augment
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.distributed = distributed
        self.padding = int(padding)
        self.pad_mode = pad_mode
        self._epoch = 0
        self.images = imageset.images.to(self.device)
        self.labels = imageset.labels.to(self.device)

    # ---------------------------------------------------------------- sizes and order
    @property
    def num_samples(self) -> int:
        """Images per epoch on this rank."""
        n = len(self.imageset)
        if self.distributed is None:
            return n
        return n // self.distributed[1]

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, e: int) -> None:
        """The epoch that plain iteration (``for x, y in loader``) yields."""
        self._epoch = int(e)

    def order(self, e: int) -> Tensor:
        """Indices (CPU int64) this rank visits in epoch ``e``, in order."""
        n = len(self.imageset)
        perm = torch.randperm(n, generator=_generator(self.seed, 1, e)) if self.shuffle else torch.arange(n)
        if self.distributed is not None:
            rank, world = self.distributed
            perm = perm[: self.num_samples * world][rank::world]
        return perm

    def augmentation(self, e: int, b: int, n: int) -> tuple[Tensor, Tensor]:
        """Crop offsets (n, 2) and flips (n,) of batch ``b`` of epoch ``e`` (CPU)."""
        rank = 0 if self.distributed is None else self.distributed[0]
        g = _generator(self.seed, 2, e, b, rank)
        offsets = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        return offsets, flips

    # --------------------------------------------------------------------- batches
    def make_batch(self, images: Tensor, labels: Tensor, e: int, b: int) -> tuple[Tensor, Tensor]:
        """uint8 images (on any device) -> float batch, augmented as batch ``b`` of epoch ``e``."""
        if self.augment:
            offsets, flips = self.augmentation(e, b, images.shape[0])
            images = crop_flip(images, offsets, flips, self.padding, self.pad_mode)
        return images.float().div_(255.0), labels

    def epoch(self, e: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches of epoch ``e`` from batch index ``start`` on."""
        if start < 0:
            raise UserError(f"start={start}: expected a batch index >= 0")
        order = self.order(e)
        if self.device.type != "cpu":
            order = order.to(self.device)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.make_batch(self.images[idx], self.labels[idx], e, b)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.epoch(self._epoch)


# ------------------------------------------------------------------- streaming from files
class FileDataset(torch.utils.data.Dataset):
    """Image files decoded on demand (in ``DataLoader`` worker processes), resized to ``size``.

    Items are ``(uint8 (C, H, W) tensor, label)``. Decoding uses
    :func:`robustlens.data.formats.decode_image`, the same function the in-memory readers use.
    """

    def __init__(
        self, files: Sequence[str | os.PathLike], labels: Sequence[int], size: int | None = None,
        channels: int = 3, resample: str = "bilinear",
    ) -> None:
        if len(files) != len(labels):
            raise UserError(f"{len(files)} files but {len(labels)} labels")
        self.files = [os.fspath(f) for f in files]
        self.labels = torch.as_tensor(list(labels), dtype=torch.int64)
        self.size = size
        self.channels = channels
        self.resample = resample

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from robustlens.data.formats import decode_image

        arr = decode_image(Path(self.files[i]), self.size, self.channels, self.resample)
        if not arr.flags.writeable:
            arr = arr.copy()
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), int(self.labels[i])


class _OrderSampler(torch.utils.data.Sampler):
    def __init__(self, loader: "FileLoader", e: int, start: int) -> None:
        self.loader, self.e, self.start = loader, e, start

    def __iter__(self):
        order = self.loader.order(self.e).tolist()
        bs = self.loader.batch_size
        for b in range(self.start, len(self.loader)):
            yield order[b * bs : (b + 1) * bs]

    def __len__(self) -> int:
        return len(self.loader) - self.start


class FileLoader(TensorLoader):
    """Like :class:`TensorLoader`, but the images stay on disk and are decoded by
    ``num_workers`` processes (``torch.utils.data.DataLoader``); yields the very same batches
    as a ``TensorLoader`` with the same arguments over the decoded set.

    ``files``/``labels``/``classes`` typically come from
    :func:`robustlens.data.formats.scan_folder`.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        labels: Sequence[int],
        classes: list[str],
        batch_size: int,
        size: int | None = None,
        num_workers: int = 2,
        channels: int = 3,
        **kwargs,
    ) -> None:
        self.dataset = FileDataset(files, labels, size, channels)
        stub = ImageSet(
            images=torch.zeros(len(files), channels, 1, 1, dtype=torch.uint8),
            labels=self.dataset.labels,
            classes=list(classes),
            name="files",
        )
        super().__init__(stub, batch_size, **kwargs)
        self.num_workers = int(num_workers)

    @classmethod
    def from_folder(
        cls, root: str | os.PathLike, split: str = "train", batch_size: int = 256, size: int | None = None,
        num_workers: int = 2, **kwargs,
    ) -> "FileLoader":
        """Stream one split of an image folder (``root/[split/]<class>/<image>``) from disk."""
        from robustlens.data.formats import SPLIT_NAMES, scan_folder

        root = Path(root).expanduser()
        if not root.is_dir():
            raise UserError(f"{root}: no such folder")
        files, classes, splits = scan_folder(root)
        key = SPLIT_NAMES.get(split.lower(), split)
        if key not in splits and split in ("train", "all") and len(splits) == 1:
            key = next(iter(splits))
        if key not in splits:
            raise UserError(f"{root}: no split {split!r}; it has {', '.join(splits)}")
        items = splits[key]
        return cls([files[i] for i, _ in items], [k for _, k in items], classes, batch_size, size=size,
                   num_workers=num_workers, **kwargs)

    def epoch(self, e: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        if start < 0:
            raise UserError(f"start={start}: expected a batch index >= 0")
        dl = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=_OrderSampler(self, e, start),
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for b, (images, labels) in enumerate(dl, start=start):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            yield self.make_batch(images, labels, e, b)
