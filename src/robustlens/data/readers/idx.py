"""``idx``: MNIST / Fashion-MNIST IDX files (``train-images-idx3-ubyte[.gz]``, ``t10k-...``).

The format is LeCun's (http://yann.lecun.com/exdb/mnist/); greyscale is kept as 1 channel
unless ``channels=3``.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from robustlens.data.base import ImageSet
from robustlens.data.readers.base import READERS, Detect, Reader, _convert_channels, _err, _imageset, resize_uint8

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx_file(path: Path) -> np.ndarray:
    """One IDX file (LeCun's MNIST format; gzip detected from the magic bytes)."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise _err(path, f"cannot read ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise _err(path, "not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    need = int(np.prod(dims)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != need:
        raise _err(path, f"IDX header says {dims} ({need} bytes) but the file holds {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _idx_files(root: Path) -> dict[str, tuple[Path, Path]]:
    out = {}
    for prefix, split in (("train", "train"), ("t10k", "test")):
        imgs = sorted(root.glob(f"{prefix}-images-idx3-ubyte*")) or sorted(root.glob(f"{prefix}-images.idx3-ubyte*"))
        labs = sorted(root.glob(f"{prefix}-labels-idx1-ubyte*")) or sorted(root.glob(f"{prefix}-labels.idx1-ubyte*"))
        if imgs and labs:
            out[split] = (imgs[0], labs[0])
        elif imgs or labs:
            raise _err(root, f"{(imgs or labs)[0].name} has no matching {'labels' if imgs else 'images'} file")
    return out


def read_idx(path: Path, size=None, channels=None, resample="bilinear", **_) -> dict[str, ImageSet]:
    root = path if path.is_dir() else path.parent
    pairs = _idx_files(root)
    if not pairs:
        raise _err(path, "no IDX files found (expected train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                         "t10k-...)")
    fashion = "fashion" in os.fspath(root.resolve()).lower()
    out = {}
    for split, (fi, fl) in pairs.items():
        x = read_idx_file(fi)
        y = read_idx_file(fl)
        if x.ndim != 3 or x.dtype != np.uint8:
            raise _err(fi, f"expected uint8 images (N, H, W), got {x.dtype} {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise _err(fl, f"expected {len(x)} labels (one per image in {fi.name}), got shape {y.shape}")
        images = torch.from_numpy(x.copy()).unsqueeze(1)
        images = resize_uint8(_convert_channels(images, channels), size, resample)
        labels = torch.from_numpy(y.astype(np.int64))
        n_cls = max(10, int(labels.max()) + 1) if len(labels) else 10
        classes = FASHION_CLASSES if fashion and n_cls == 10 else [str(i) for i in range(n_cls)]
        out[split] = _imageset(images, labels, classes, f"{root.name}/{split}",
                               {"source": os.fspath(path), "format": "idx", "split": split})
    return out


READERS.add("idx", Reader(
    read_idx,
    folder=Detect(lambda path: any(path.glob("*-idx3-ubyte*")) or any(path.glob("*.idx3-ubyte*")), rank=2),
    file=Detect(lambda name: "idx1-ubyte" in name or "idx3-ubyte" in name, rank=2),
), "MNIST / Fashion-MNIST IDX files")
