"""``tinyimagenet``: Tiny ImageNet 200 (``wnids.txt``, ``train/<wnid>/images/*.JPEG`` with
``<wnid>_boxes.txt``, ``val/images`` + ``val/val_annotations.txt``).

Fills ``boxes`` (inclusive corners in the files -> exclusive here, rescaled with the images).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from robustlens.data.base import ImageSet
from robustlens.data.readers.base import IMAGE_EXTENSIONS, READERS, Detect, Reader, _err, _imageset
from robustlens.data.readers.decode import decode_image_size, decode_many


def _tiny_root(path: Path) -> Path:
    if (path / "tiny-imagenet-200").is_dir():
        return path / "tiny-imagenet-200"
    return path


def read_tinyimagenet(path: Path, size=None, channels=3, resample="bilinear", num_workers=None, **_) -> dict[str, ImageSet]:
    root = _tiny_root(path)
    wnids_file = root / "wnids.txt"
    if not wnids_file.exists():
        raise _err(root, "no wnids.txt (not a Tiny ImageNet folder)")
    classes = [w.strip() for w in wnids_file.read_text().split() if w.strip()]
    index = {w: i for i, w in enumerate(classes)}
    items: dict[str, list[tuple[Path, int, list[float] | None]]] = {}
    for w in classes:
        d = root / "train" / w / "images"
        boxes = {}
        bf = root / "train" / w / f"{w}_boxes.txt"
        if bf.exists():
            for line in bf.read_text().splitlines():
                parts = line.split()
                if len(parts) == 5:
                    boxes[parts[0]] = [float(v) for v in parts[1:]]
        if d.is_dir():
            for f in sorted(d.iterdir()):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    items.setdefault("train", []).append((f, index[w], boxes.get(f.name)))
    ann = root / "val" / "val_annotations.txt"
    if ann.exists():
        for n, line in enumerate(ann.read_text().splitlines(), 1):
            parts = line.split("\t") if "\t" in line else line.split()
            if not parts or not parts[0]:
                continue
            if len(parts) < 2 or parts[1] not in index:
                raise _err(ann, f"line {n}: expected 'file<TAB>wnid<TAB>x0 y0 x1 y1' with a wnid from wnids.txt")
            box = [float(v) for v in parts[2:6]] if len(parts) >= 6 else None
            items.setdefault("val", []).append((root / "val" / "images" / parts[0], index[parts[1]], box))
    if not items:
        raise _err(root, "no images under train/<wnid>/images or val/images")
    out = {}
    for split, rows in items.items():
        missing = [f for f, _, _ in rows if not f.exists()]
        if missing:
            raise _err(missing[0], "file listed in Tiny ImageNet but missing")
        images = decode_many([(os.fspath(f), os.fspath(f)) for f, _, _ in rows], size, channels or 3, resample,
                             num_workers, desc=f"decoding tiny-imagenet {split}")
        boxes = None
        if all(b is not None for _, _, b in rows):
            h0 = torch.tensor([float(decode_image_size(rows[0][0])[1])])
            scale = (images.shape[2] / h0).item()
            b = torch.tensor([r[2] for r in rows], dtype=torch.float32)
            b[:, 2:] += 1.0  # inclusive corners -> exclusive
            boxes = b * scale
        out[split] = _imageset(images, [lab for _, lab, _ in rows], classes, f"tiny-imagenet/{split}",
                               {"source": os.fspath(path), "format": "tinyimagenet", "split": split}, boxes)
    return out


def _is_tiny_folder(path: Path) -> bool:
    return (path / "wnids.txt").exists() or (path / "tiny-imagenet-200" / "wnids.txt").exists()


READERS.add("tinyimagenet", Reader(
    read_tinyimagenet, options=("num_workers",), cached=True, folder=Detect(_is_tiny_folder, rank=0),
), "Tiny ImageNet 200 (with boxes)")
