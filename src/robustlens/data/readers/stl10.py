"""``stl10``: STL-10 binary ``train_X.bin`` + ``train_y.bin`` (labels 1..10), column-major
3x96x96 images; ``unlabeled_X.bin`` is skipped."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from robustlens.data.base import ImageSet
from robustlens.data.readers.base import READERS, Detect, Reader, _convert_channels, _err, _imageset, resize_uint8

STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def read_stl10(path: Path, size=None, channels=None, resample="bilinear", **_) -> dict[str, ImageSet]:
    root = path if path.is_dir() else path.parent
    classes = STL10_CLASSES
    names_file = root / "class_names.txt"
    if names_file.exists():
        classes = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    out = {}
    for split in ("train", "test"):
        fx, fy = root / f"{split}_X.bin", root / f"{split}_y.bin"
        if not fx.exists():
            continue
        if not fy.exists():
            raise _err(fx, f"no labels file {fy.name} next to it")
        raw = np.fromfile(fx, dtype=np.uint8)
        per = 3 * 96 * 96
        if raw.size % per:
            raise _err(fx, f"size {raw.size} bytes is not a multiple of 3x96x96")
        x = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # column-major images
        y = np.fromfile(fy, dtype=np.uint8).astype(np.int64) - 1
        if len(y) != len(x):
            raise _err(fy, f"{len(y)} labels for {len(x)} images in {fx.name}")
        images = torch.from_numpy(np.ascontiguousarray(x))
        images = resize_uint8(_convert_channels(images, channels), size, resample)
        out[split] = _imageset(images, y, classes, f"stl10/{split}",
                               {"source": os.fspath(path), "format": "stl10", "split": split})
    if not out:
        raise _err(path, "no STL-10 files (train_X.bin + train_y.bin, test_X.bin + test_y.bin)")
    return out


READERS.add("stl10", Reader(
    read_stl10,
    folder=Detect(lambda path: (path / "train_X.bin").exists() or (path / "test_X.bin").exists(), rank=4),
    file=Detect(lambda name: name.endswith("_x.bin") or name.endswith("_y.bin"), rank=3),
), "STL-10 binary files")
