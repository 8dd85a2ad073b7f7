"""``folder``: ``root/<class>/*.jpg|jpeg|png|bmp|webp|gif|tif`` or ``root/<split>/<class>/...``.

Split folders are train, test, val, valid, validation, ... A single shared top folder is
skipped. Without split folders the one split is ``"train"``. :func:`folder_layout` is shared
with the ``archive`` reader (the same layout inside a tar) and the streaming
:class:`~robustlens.data.loader.FileLoader` (:func:`scan_folder`).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Sequence

import torch

from robustlens.data.base import ImageSet
from robustlens.data.readers.base import IMAGE_EXTENSIONS, READERS, SPLIT_NAMES, Detect, Reader, _imageset
from robustlens.data.readers.decode import decode_many
from robustlens.errors import UserError


def _strip_prefix(rels: list[PurePosixPath]) -> list[PurePosixPath]:
    """Drop leading folders shared by every file that are not split names."""
    while rels and min(len(r.parts) for r in rels) >= 3:
        first = {r.parts[0] for r in rels}
        if len(first) != 1 or next(iter(first)).lower() in SPLIT_NAMES:
            break
        rels = [PurePosixPath(*r.parts[1:]) for r in rels]
    return rels


def folder_layout(rels: Sequence[str], where: str) -> tuple[list[str], dict[str, list[tuple[int, int]]]]:
    """Classes and, per split, ``(item index, label)`` from relative file paths.

    ``root/<split>/<class>/file`` when every top folder is a split name, else
    ``root/<class>/file`` (one split, ``"train"``).
    """
    paths = _strip_prefix([PurePosixPath(r) for r in rels])
    if not paths:
        raise UserError(f"{where}: no images ({', '.join(IMAGE_EXTENSIONS[:5])}, ...) found")
    tops = {p.parts[0].lower() for p in paths}
    split_layout = all(t in SPLIT_NAMES for t in tops) and min(len(p.parts) for p in paths) >= 3
    per_split: dict[str, list[tuple[int, str]]] = {}
    for i, p in enumerate(paths):
        if split_layout:
            split, cls = SPLIT_NAMES[p.parts[0].lower()], p.parts[1]
        else:
            if len(p.parts) < 2:
                raise UserError(
                    f"{where}: image {p} is not inside a class folder; expected {where}/<class>/<image> "
                    f"or {where}/<split>/<class>/<image>"
                )
            split, cls = "train", p.parts[0]
        per_split.setdefault(split, []).append((i, cls))
    classes = sorted({c for items in per_split.values() for _, c in items})
    index = {c: k for k, c in enumerate(classes)}
    return classes, {s: [(i, index[c]) for i, c in items] for s, items in per_split.items()}


def scan_folder(root: Path) -> tuple[list[Path], list[str], dict[str, list[tuple[int, int]]]]:
    """Image files under ``root`` (sorted), class names and the per-split ``(file index, label)``."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                files.append(Path(dirpath) / f)
    rels = [f.relative_to(root).as_posix() for f in files]
    classes, splits = folder_layout(rels, os.fspath(root))
    return files, classes, splits


def _split_sets(images: torch.Tensor, classes, splits, name: str, meta: dict, boxes=None) -> dict[str, ImageSet]:
    out = {}
    for split, items in splits.items():
        idx = torch.tensor([i for i, _ in items], dtype=torch.long)
        labels = torch.tensor([lab for _, lab in items], dtype=torch.long)
        out[split] = _imageset(
            images[idx], labels, classes, f"{name}/{split}", {**meta, "split": split},
            None if boxes is None else boxes[idx],
        )
    return out


def read_folder(root: Path, size=None, channels=3, resample="bilinear", num_workers=None) -> dict[str, ImageSet]:
    files, classes, splits = scan_folder(root)
    images = decode_many([(os.fspath(f), os.fspath(f)) for f in files], size, channels or 3, resample, num_workers,
                         desc=f"decoding {root.name}")
    return _split_sets(images, classes, splits, root.name, {"source": os.fspath(root), "format": "folder"})


READERS.add("folder", Reader(
    read_folder, options=("num_workers",), cached=True, needs=Path.is_dir, needs_text="a folder",
    folder=Detect(lambda path: True, rank=99),  # any other folder
), "root/<class>/<image> or root/<split>/<class>/<image>")
