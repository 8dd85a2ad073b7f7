"""What every reader shares: the :class:`Reader` record, the ``READERS`` registry and the helpers.

A reader is a function ``read(path, size=None, channels=None, resample="bilinear", **options)
-> {split: ImageSet}`` registered with a :class:`Reader` that tells
:func:`robustlens.data.formats.read_splits` everything it needs: the reader options it takes,
whether its decoded output goes through the decode-once cache, what the path must be when the
format is forced, and how :func:`~robustlens.data.formats.detect_format` recognises it. A new
format is one module under :mod:`robustlens.data.readers` that calls ``READERS.add`` (and its
name in :data:`robustlens.names.FORMATS`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from robustlens.data.base import ImageSet
from robustlens.errors import UserError
from robustlens.registry import Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "test": "test", "testing": "test",
    "val": "val", "valid": "val", "validation": "val",
}
RESAMPLE = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Detect:
    """How :func:`~robustlens.data.formats.detect_format` recognises a format: ``test`` on a
    folder (its path) or on a file (its lower-cased name); a lower ``rank`` is tried first."""

    test: Callable[..., bool]
    rank: int


@dataclass(frozen=True)
class Reader:
    """One on-disk format: its ``read`` function and what ``read_splits`` must know about it."""

    read: Callable[..., dict[str, ImageSet]]
    options: tuple[str, ...] = ()  # reader options it takes beyond size / channels / resample
    cached: bool = False  # decodes image files, so its output goes through the decode-once cache
    needs: Callable[[Path], bool] | None = None  # what the path must satisfy when the format is forced
    needs_text: str = ""  # ... said as "format 'x' needs <needs_text>"
    folder: Detect | None = None  # detection of a folder in this format
    file: Detect | None = None  # detection of a file in this format


READERS: Registry[Reader] = Registry("format", key="format")


# =================================================================================== helpers
def _err(path: str | os.PathLike, what: str) -> UserError:
    return UserError(f"{os.fspath(path)}: {what}")


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def gib(nbytes: float) -> str:
    """``nbytes`` in words: ``"1.5 GiB"``, ``"48.0 MiB"``."""
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows) or no such name
        return None


def check_memory(n: int, channels: int, size: int | None, where: str) -> None:
    """Refuse, before any work, to decode ``n`` images to ``size`` x ``size`` when the uint8
    array alone would exceed this machine's physical memory; the message gives the estimate."""
    mem = _physical_memory()
    need = n * channels * (size or 0) ** 2
    if mem is not None and need > mem:
        raise UserError(
            f"{where}: {n} images at {size}x{size} with {channels} channel(s) take {gib(need)} as uint8, more than "
            f"this machine's {gib(mem)} of memory; pass a smaller --size"
        )


def resize_uint8(images: torch.Tensor, size: int | None, resample: str = "bilinear", chunk: int = 2048) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) to (N, C, size, size) with antialiased interpolation."""
    if size is None or tuple(images.shape[2:]) == (size, size):
        return images
    check_memory(images.shape[0], images.shape[1], size, "resizing")
    out = torch.empty(images.shape[0], images.shape[1], size, size, dtype=torch.uint8)
    for a in range(0, images.shape[0], chunk):
        x = images[a : a + chunk].float()
        if resample == "nearest":
            y = F.interpolate(x, size=(size, size), mode="nearest-exact")
        else:
            y = F.interpolate(x, size=(size, size), mode=resample, align_corners=False, antialias=True)
        out[a : a + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _convert_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    if channels is None or images.shape[1] == channels:
        return images
    if channels == 3 and images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and images.shape[1] == 3:  # ITU-R 601-2 luma, as PIL's convert("L")
        w = torch.tensor([299, 587, 114], dtype=torch.int32).view(1, 3, 1, 1)
        return ((images.to(torch.int32) * w).sum(1, keepdim=True) + 500).div(1000, rounding_mode="floor").to(torch.uint8)
    raise AssertionError((images.shape, channels))


def _imageset(images, labels, classes, name, meta, boxes=None) -> ImageSet:
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
        raise UserError(
            f"{name}: labels span {int(labels.min())}..{int(labels.max())} but there are {len(classes)} classes"
        )
    return ImageSet(images=images, labels=labels, classes=list(classes), name=name, boxes=boxes, meta=meta)
