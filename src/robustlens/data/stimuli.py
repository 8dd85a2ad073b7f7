"""Stimulus sets of Geirhos et al. (2019) read from disk, in the layout of their repository
(``rgeirhos/texture-vs-shape``, ``stimuli/``) and of model-vs-human's data sets:

* ``cue_conflict``: ``<shape class>/<shape><i>-<texture><j>.png`` (the shape of one image
  stylised with the texture of another: ``airplane/airplane1-bicycle2.png``);
* ``silhouettes`` and ``edges``: ``<class>/<class><i>.png`` (``bear/bear3.png``).

Class names are lower-case words (the 16 categories: airplane, bear, ..., truck). Every image
file (``.png``, ``.jpg``, ``.jpeg``) must sit in a class folder and parse; the first one that
does not is named in a one-line :class:`~robustlens.errors.UserError`, so a folder in another
layout is refused before any decoding. Files directly in the root that are not images
(``README``) are ignored; hidden files too.

:func:`scan_stimuli` parses the names only (cheap, for checking a spec); :func:`read_stimuli`
decodes the images into an :class:`~robustlens.data.base.ImageSet` whose label is the (shape)
class, with the factors ``shape`` and ``texture`` for a cue-conflict set.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from robustlens.errors import UserError

KINDS = ("cue_conflict", "silhouettes", "edges")
EXTENSIONS = (".png", ".jpg", ".jpeg")
_CUE = re.compile(r"(?P<shape>[a-z_]+?)(?P<i>\d+)-(?P<texture>[a-z_]+?)(?P<j>\d+)")
_ONE = re.compile(r"(?P<shape>[a-z_]+?)(?P<i>\d+)")
_PATTERN = {"cue_conflict": "<shape class>/<shape><i>-<texture><j>.png",
            "silhouettes": "<class>/<class><i>.png", "edges": "<class>/<class><i>.png"}


@dataclass(frozen=True)
class StimulusFiles:
    """What :func:`scan_stimuli` found: the files (sorted), their shape and texture class
    names (texture = shape outside cue-conflict sets) and the classes (sorted)."""

    kind: str
    root: Path
    files: tuple[str, ...]
    shapes: tuple[str, ...]
    textures: tuple[str, ...]
    classes: tuple[str, ...]


def _parse(rel: Path, kind: str, root: Path) -> tuple[str, str]:
    """``(shape, texture)`` of one file, or the error naming it."""
    bad = UserError(f"{root / rel}: does not parse as a {kind.replace('_', '-')} stimulus; expected "
                    f"{root}/{_PATTERN[kind]} (e.g. {'airplane/airplane1-bicycle2.png' if kind == 'cue_conflict' else 'bear/bear3.png'})")
    if len(rel.parts) != 2 or rel.suffix.lower() not in EXTENSIONS:
        raise bad
    m = (_CUE if kind == "cue_conflict" else _ONE).fullmatch(rel.stem)
    if m is None or m["shape"] != rel.parts[0]:
        raise bad
    return m["shape"], (m["texture"] if kind == "cue_conflict" else m["shape"])


def scan_stimuli(path: str | os.PathLike, kind: str) -> StimulusFiles:
    """Parse the file names of a stimulus folder (no image is opened)."""
    from robustlens.data.readers.walk import walk_files

    if kind not in KINDS:
        from robustlens.registry import unknown_name

        raise unknown_name("stimulus set", kind, KINDS)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (a {kind.replace('_', '-')} stimulus set: {_PATTERN[kind]})")
    files, shapes, textures = [], [], []
    for f in walk_files(root):
        rel = Path(f).relative_to(root)
        if len(rel.parts) == 1 and rel.suffix.lower() not in EXTENSIONS:
            continue  # a README or licence beside the class folders
        shape, texture = _parse(rel, kind, root)
        files.append(f)
        shapes.append(shape)
        textures.append(texture)
    if not files:
        raise UserError(f"{root}: no stimuli; expected {root}/{_PATTERN[kind]}")
    classes = tuple(sorted(set(shapes) | set(textures)))
    return StimulusFiles(kind, root, tuple(files), tuple(shapes), tuple(textures), classes)


def read_stimuli(path: str | os.PathLike, kind: str, size: int | None = None, num_workers: int | None = None):
    """The stimuli of ``path`` as an :class:`~robustlens.data.base.ImageSet` (RGB, resized to
    ``size x size`` when given; Geirhos's images are 224 x 224): label = shape class index in
    the sorted class list, factors ``shape`` and ``texture``; ``meta["files"]`` the file names."""
    import torch

    from robustlens.data.base import ImageSet
    from robustlens.data.readers.decode import decode_many

    found = scan_stimuli(path, kind)
    index = {c: k for k, c in enumerate(found.classes)}
    images = decode_many([(f, f) for f in found.files], size, 3, "bilinear", num_workers, desc=f"decoding {kind}")
    shape = torch.tensor([index[s] for s in found.shapes], dtype=torch.int64)
    texture = torch.tensor([index[t] for t in found.textures], dtype=torch.int64)
    rels = [Path(f).relative_to(found.root).as_posix() for f in found.files]
    return ImageSet(images=images, labels=shape, classes=list(found.classes), name=kind,
                    factors=torch.stack([shape, texture], 1), factor_names=("shape", "texture"),
                    meta={"source": os.fspath(found.root), "kind": kind, "files": rels})
