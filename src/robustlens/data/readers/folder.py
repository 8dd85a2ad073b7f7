"""``folder``: ``root/<class>/*.jpg|jpeg|png|bmp|webp|gif|tif`` or ``root/<split>/<class>/...``.

Split folders are train, test, val, valid, validation, ... A single shared top folder is
skipped. Without split folders the one split is ``"train"``. One layout holds for the whole
tree: a folder beside the split folders, an image directly in a split folder, images at two
depths, a path with ``..`` (an archive member) or splits with different class folders are
errors that name the culprit, never a silent change of what the folders mean.
:func:`folder_layout` is shared with the ``archive`` reader (the same layout inside a tar)
and the streaming :class:`~robustlens.data.loader.FileLoader` (:func:`scan_folder`, which
lists files with :func:`~robustlens.data.readers.walk.walk_files`: symbolic links followed
safely).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Sequence

import torch

from robustlens.data.base import ImageSet
from robustlens.data.readers.base import IMAGE_EXTENSIONS, READERS, SPLIT_NAMES, Detect, Reader, _imageset
from robustlens.data.readers.decode import decode_many
from robustlens.data.readers.walk import walk_files
from robustlens.errors import UserError


def _strip_prefix(rels: list[PurePosixPath]) -> list[PurePosixPath]:
    """Drop leading folders shared by every file that are not split names."""
    while rels and min(len(r.parts) for r in rels) >= 3:
        first = {r.parts[0] for r in rels}
        if len(first) != 1 or next(iter(first)).lower() in SPLIT_NAMES:
            break
        rels = [PurePosixPath(*r.parts[1:]) for r in rels]
    return rels


def _check_member_paths(paths: list[PurePosixPath], where: str) -> None:
    for p in paths:
        if p.is_absolute() or ".." in p.parts:
            raise UserError(
                f"{where}: {p}: an absolute path or one with '..'; every image must lie inside the data set "
                "(<class>/<image> or <split>/<class>/<image>)"
            )


def _split_layout(paths: list[PurePosixPath], where: str) -> bool:
    """``True`` for ``<split>/<class>/<image>``: some top folder is a split name holding class
    folders. Then every top folder must be a split and every image inside a class folder; a
    stray folder or image beside them is an error naming it, never a silent class."""
    splits = sorted({p.parts[0] for p in paths if len(p.parts) >= 3 and p.parts[0].lower() in SPLIT_NAMES})
    if not splits:
        return False
    shown = ", ".join(f"{s}/" for s in splits)
    for p in paths:
        if p.parts[0].lower() not in SPLIT_NAMES:
            raise UserError(
                f"{where}: {p.parts[0]}/ (holding {p}) is beside the split folders {shown}; expected only split "
                f"folders ({', '.join(sorted(set(SPLIT_NAMES.values())))}) each holding <class>/<image>, or only "
                f"class folders: move {p.parts[0]}/ out of {where}"
            )
        if len(p.parts) < 3:
            raise UserError(
                f"{where}: image {p} lies directly in the split folder {p.parts[0]}/; expected "
                f"{p.parts[0]}/<class>/<image>"
            )
    return True


def _check_depths(paths: list[PurePosixPath], level: int, where: str, pattern: str) -> None:
    """Every image directly in its class folder, or every one deeper: never both (a stray image
    or folder that would otherwise change what the folders mean)."""
    shallow = next((p for p in paths if len(p.parts) == level), None)
    deep = next((p for p in paths if len(p.parts) > level), None)
    if shallow is not None and deep is not None:
        raise UserError(
            f"{where}: images at different depths ({shallow} and {deep}); expected every image at "
            f"{where}/{pattern}: move or remove the odd one"
        )


def _check_same_classes(per_split: dict[str, list[tuple[int, str]]], where: str) -> None:
    """Every split must have the same class folders: a model trained on one split is scored on
    another by class index."""
    sets = {s: {c for _, c in items} for s, items in per_split.items()}
    union = set().union(*sets.values())
    for split, have in sets.items():
        if have != union:
            missing = sorted(union - have)
            raise UserError(
                f"{where}: the splits have different classes: {split}/ has no {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''} (which {', '.join(s for s in sets if s != split)} "
                "has); every split needs the same class folders"
            )


def folder_layout(rels: Sequence[str], where: str) -> tuple[list[str], dict[str, list[tuple[int, int]]]]:
    """Classes and, per split, ``(item index, label)`` from relative file paths.

    ``root/<split>/<class>/file`` when the top folders are split names holding class folders,
    else ``root/<class>/file`` (one split, ``"train"``). One layout for the whole tree: a
    folder or image that does not fit it, a path with ``..``, or splits with different class
    sets are errors naming the culprit.
    """
    paths = [PurePosixPath(r) for r in rels]
    _check_member_paths(paths, where)
    paths = _strip_prefix(paths)
    if not paths:
        raise UserError(f"{where}: no images ({', '.join(IMAGE_EXTENSIONS[:5])}, ...) found")
    split_layout = _split_layout(paths, where)
    if not split_layout:
        loose = next((p for p in paths if len(p.parts) < 2), None)
        if loose is not None:
            raise UserError(
                f"{where}: image {loose} is not inside a class folder; expected {where}/<class>/<image> "
                f"or {where}/<split>/<class>/<image>"
            )
    level = 3 if split_layout else 2
    _check_depths(paths, level, where, "<split>/<class>/<image>" if split_layout else "<class>/<image>")
    per_split: dict[str, list[tuple[int, str]]] = {}
    for i, p in enumerate(paths):
        split, cls = (SPLIT_NAMES[p.parts[0].lower()], p.parts[1]) if split_layout else ("train", p.parts[0])
        per_split.setdefault(split, []).append((i, cls))
    _check_same_classes(per_split, where)
    classes = sorted({c for items in per_split.values() for _, c in items})
    index = {c: k for k, c in enumerate(classes)}
    return classes, {s: [(i, index[c]) for i, c in items] for s, items in per_split.items()}


def scan_folder(root: Path) -> tuple[list[Path], list[str], dict[str, list[tuple[int, int]]]]:
    """Image files under ``root`` (in :func:`~robustlens.data.readers.walk.walk_files` order:
    sorted, symbolic links followed safely), class names and the per-split ``(file index, label)``."""
    files = [Path(f) for f in walk_files(root) if os.path.basename(f).lower().endswith(IMAGE_EXTENSIONS)]
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


def read_folder(root: Path, size=None, channels=3, resample="bilinear", num_workers=None,
                preprocessing="squash") -> dict[str, ImageSet]:
    files, classes, splits = scan_folder(root)
    images = decode_many([(os.fspath(f), os.fspath(f)) for f in files], size, channels or 3, resample, num_workers,
                         desc=f"decoding {root.name}", preprocessing=preprocessing)
    return _split_sets(images, classes, splits, root.name, {"source": os.fspath(root), "format": "folder"})


READERS.add("folder", Reader(
    read_folder, options=("num_workers", "preprocessing"), cached=True, needs=Path.is_dir, needs_text="a folder",
    folder=Detect(lambda path: True, rank=99),  # any other folder
), "root/<class>/<image> or root/<split>/<class>/<image>")
