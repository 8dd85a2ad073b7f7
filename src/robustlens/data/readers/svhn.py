"""``svhn``: SVHN cropped digits ``train_32x32.mat`` / ``test_32x32.mat`` / ``extra_32x32.mat``
(label 10 means digit 0)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from robustlens.data.base import ImageSet
from robustlens.data.readers.base import READERS, Detect, Reader, _convert_channels, _err, _imageset, resize_uint8


def read_svhn(path: Path, size=None, channels=None, resample="bilinear", **_) -> dict[str, ImageSet]:
    import scipy.io

    if path.is_dir():
        files = {s: path / f"{s}_32x32.mat" for s in ("train", "test", "extra") if (path / f"{s}_32x32.mat").exists()}
        if not files:
            raise _err(path, "no SVHN files (train_32x32.mat, test_32x32.mat, extra_32x32.mat)")
    else:
        stem = path.stem.split("_")[0].lower()
        files = {stem if stem in ("train", "test", "extra") else "train": path}
    out = {}
    for split, f in files.items():
        try:
            m = scipy.io.loadmat(f)
        except Exception as e:  # scipy raises ValueError / MatReadError / OSError
            raise _err(f, f"not a readable .mat file ({type(e).__name__}: {e})") from None
        if "X" not in m or "y" not in m:
            raise _err(f, "expected variables X (32, 32, 3, N) and y (N, 1)")
        x, y = np.asarray(m["X"]), np.asarray(m["y"]).reshape(-1).astype(np.int64)
        if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
            raise _err(f, f"expected X of shape (H, W, 3, N) with N = {len(y)} labels, got {x.shape}")
        y = np.where(y == 10, 0, y)
        images = torch.from_numpy(np.ascontiguousarray(x.astype(np.uint8).transpose(3, 2, 0, 1)))
        images = resize_uint8(_convert_channels(images, channels), size, resample)
        out[split] = _imageset(images, y, [str(i) for i in range(10)], f"svhn/{split}",
                               {"source": os.fspath(path), "format": "svhn", "split": split})
    return out


READERS.add("svhn", Reader(
    read_svhn,
    folder=Detect(lambda path: any(path.glob("*_32x32.mat")), rank=3),
    file=Detect(lambda name: name.endswith(".mat"), rank=1),
), "SVHN cropped digits (.mat)")
