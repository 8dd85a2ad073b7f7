"""The one in-memory form every data source is read into."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from torch import Tensor


def sample_indices(total: int, n: int, seed: int = 0, sort: bool = False) -> Tensor:
    """The first ``min(n, total)`` entries of a permutation of ``range(total)`` seeded with
    ``seed``: every prefix is itself a fair sample. ``sort=True`` returns them in increasing
    order instead (the same set)."""
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(total, generator=g)[: min(n, total)]
    return idx.sort().values if sort else idx


@dataclass
class ImageSet:
    """A split of an image-classification data set, held as tensors.

    Attributes:
        images: uint8 tensor (N, C, H, W), values 0..255.
        labels: int64 tensor (N,), values in ``range(len(classes))``.
        classes: class names, index = label.
        name: where it came from (source string and split), for messages and results.
        factors: optional int64 (N, K) extra labels, one column per ``factor_names`` entry
            (the procedural set: shape, texture, colour).
        factor_names: names of the ``factors`` columns.
        masks: optional bool (N, H, W) foreground masks.
        boxes: optional float32 (N, 4) boxes ``(x0, y0, x1, y1)`` in pixels, x1/y1 exclusive.
        meta: free-form provenance (generator options, file format, ...).
    """

    images: Tensor
    labels: Tensor
    classes: list[str]
    name: str = ""
    factors: Tensor | None = None
    factor_names: tuple[str, ...] = ()
    masks: Tensor | None = None
    boxes: Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.images.dtype != torch.uint8:
            raise ValueError(f"{self.name}: images must be uint8, got {self.images.dtype}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.name}: {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}")
        self.labels = self.labels.to(torch.int64)
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise ValueError(
                f"{self.name}: labels span {int(self.labels.min())}..{int(self.labels.max())} "
                f"but there are {len(self.classes)} classes"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def resolution(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def subset(self, index: Tensor | Sequence[int] | slice) -> "ImageSet":
        """The images at ``index`` (a slice, a list or an index tensor), with their extras."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long)

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index]

        return replace(
            self,
            images=self.images[index],
            labels=self.labels[index],
            factors=pick(self.factors),
            masks=pick(self.masks),
            boxes=pick(self.boxes),
        )

    def head(self, n: int) -> "ImageSet":
        """The first ``n`` images. Splits read from folders and archives are sorted by class,
        so use :meth:`sample` for any subset meant to stand for the split."""
        return self.subset(slice(0, n))

    def sample(self, n: int, seed: int = 0) -> "ImageSet":
        """``min(n, len(self))`` images in a seeded random order: a fair subset even of a
        class-sorted split, and so is every prefix of it (``sample(1000)[:200]``)."""
        return self.subset(sample_indices(len(self), n, seed))

    def float(self, index: Tensor | slice | None = None, device: str | torch.device | None = None) -> Tensor:
        """Images as float32 in [0, 1] (all of them or those at ``index``), optionally moved."""
        x = self.images if index is None else self.images[index]
        if device is not None:
            x = x.to(device, non_blocking=True)
        return x.float().div_(255.0)

    def factor(self, name: str) -> Tensor:
        """The column of ``factors`` called ``name`` (e.g. ``"texture"``)."""
        if self.factors is None or name not in self.factor_names:
            raise KeyError(f"{self.name}: no factor {name!r}; has {list(self.factor_names) or 'none'}")
        return self.factors[:, self.factor_names.index(name)]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "images": len(self),
            "channels": self.channels,
            "resolution": list(self.resolution),
            "classes": list(self.classes),
            "per_class": self.class_counts(),
        }
