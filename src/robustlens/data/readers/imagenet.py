"""``imagenet``: an ImageNet-1k folder named by WordNet id, ``root/[<split>/]<wnid>/<image>``
(``val/n01440764/ILSVRC2012_val_00000293.JPEG``), labelled with the 1000 ImageNet classes.

Unlike the ``folder`` reader (whose classes are the folders found), the classes are always the
1000 ImageNet-1k WordNet ids in the standard index order (:func:`robustlens.data.imagenet.imagenet_wnids`),
so a folder holding some of the classes still gives the labels a 1000-class model predicts. A
class folder that is not an ImageNet-1k WordNet id is an error naming it. The format is detected
only for a folder of more than :data:`DETECT_MIN` class folders, every one an ImageNet-1k
WordNet id (the ILSVRC-2012 validation set has 1000); a subset such as Imagenette (10) stays a
``folder`` of its own classes: ask for this reader with ``format="imagenet"`` (``format =
"imagenet"`` in a study spec's ``[data]``).

A root without split folders is the evaluation split ``val``. Options:

* ``preprocessing``: ``"squash"`` or ``"res256crop224"`` (:mod:`~robustlens.data.readers.preprocess`,
  RobustBench's ImageNet evaluation);
* ``limit``: decode only a seeded sample of each split, an integer for every split or a table
  ``{split: n}`` (0 = all); RobustBench evaluates 5,000 validation images. The sample is
  :func:`robustlens.data.base.sample_indices` seeded with ``limit_seed`` (default 0), drawn from
  the sorted file list before any file is opened, so only those files are read, decoded and
  cached (memory: ``n x 3 x 224 x 224`` bytes); the cache entry is keyed by both options.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from robustlens.data.base import ImageSet, sample_indices
from robustlens.data.readers.base import READERS, SPLIT_NAMES, Detect, Reader, _err, _imageset
from robustlens.data.readers.decode import decode_many
from robustlens.data.readers.folder import scan_folder
from robustlens.errors import UserError

WNID = re.compile(r"n\d{8}")
DETECT_MIN = 100  # class folders, all ImageNet-1k WordNet ids, above which a folder is detected as ImageNet


def _limits(limit, splits: list[str], where: Path) -> dict[str, int]:
    """``{split: n}`` (0 = all) from ``limit``: a non-negative integer or a table of them."""
    def count(v, key: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise _err(where, f"{key}={v!r}: expected a non-negative integer (0 = every image)")
        return v

    if limit is None:
        return {s: 0 for s in splits}
    if isinstance(limit, dict):
        unknown = sorted(set(limit) - set(splits))
        if unknown:
            raise _err(where, f"limit: no split {unknown[0]!r}; the folder has {', '.join(splits)}")
        return {s: count(limit.get(s, 0), f"limit.{s}") for s in splits}
    return {s: count(limit, "limit") for s in splits}


def _check_wnids(found: list[str], wnids: list[str], root: Path) -> None:
    known = set(wnids)
    bad = [c for c in found if c not in known]
    if bad:
        shown = ", ".join(f"{c}/" for c in bad[:3]) + (f" ... ({len(bad)} in all)" if len(bad) > 3 else "")
        raise _err(root, f"class folder(s) {shown} not an ImageNet-1k WordNet id; expected <split>/<wnid>/<image> "
                         f"with wnids of the 1000 classes (e.g. val/{wnids[0]}/<image>), or format 'folder' for "
                         "other classes")


def _split_name(files: list[Path], root: Path, splits: dict) -> dict:
    """The folder reader calls a tree without split folders ``train``; here it is ``val``."""
    named = any(len(p.parts) >= 3 and p.parts[-3].lower() in SPLIT_NAMES
                for p in (PurePosixPath(f.relative_to(root).as_posix()) for f in files[:1]))
    if not named and list(splits) == ["train"]:
        return {"val": splits["train"]}
    return splits


def read_imagenet(path: Path, size=None, channels=3, resample="bilinear", num_workers=None,
                  preprocessing="squash", limit=None, limit_seed=None) -> dict[str, ImageSet]:
    from robustlens.data.imagenet import imagenet_wnids

    wnids = imagenet_wnids()
    files, found, splits = scan_folder(path)
    _check_wnids(found, wnids, path)
    splits = _split_name(files, path, splits)
    index = {w: i for i, w in enumerate(wnids)}
    seed = 0 if limit_seed is None else int(limit_seed)
    out = {}
    for split, n in _limits(limit, list(splits), path).items():
        items = splits[split]
        if n and n < len(items):
            items = [items[int(i)] for i in sample_indices(len(items), n, seed, sort=True)]
        images = decode_many([(os.fspath(files[i]), os.fspath(files[i])) for i, _ in items], size, channels or 3,
                             resample, num_workers, desc=f"decoding imagenet {split}", preprocessing=preprocessing)
        labels = [index[found[k]] for _, k in items]
        meta = {"source": os.fspath(path), "format": "imagenet", "split": split, "images_in_folder": len(splits[split]),
                "limit": n, "limit_seed": seed, "preprocessing": preprocessing}
        out[split] = _imageset(images, labels, wnids, f"{path.name}/{split}", meta)
    if not out:
        raise UserError(f"{path}: no images under <split>/<wnid>/")
    return out


def _is_imagenet_folder(path: Path) -> bool:
    """More than ``DETECT_MIN`` class folders (in ``path`` or its first split folder), all of
    them ImageNet-1k WordNet ids (names only: nothing is opened)."""
    from robustlens.data.imagenet import imagenet_wnids

    def subdirs(p: Path) -> list[str]:
        try:
            return [e.name for e in os.scandir(p) if e.is_dir() and not e.name.startswith(".")]
        except OSError:
            return []

    top = subdirs(path)
    split = next((d for d in sorted(top) if d.lower() in SPLIT_NAMES), None)
    names = subdirs(path / split) if split else top
    return len(names) > DETECT_MIN and set(names) <= set(imagenet_wnids())


READERS.add("imagenet", Reader(
    read_imagenet, options=("num_workers", "preprocessing", "limit", "limit_seed"), cached=True, needs=Path.is_dir,
    needs_text="a folder of <wnid>/<image> or <split>/<wnid>/<image>", folder=Detect(_is_imagenet_folder, rank=50),
), "ImageNet-1k: root/[<split>/]<wnid>/<image>, the 1000 classes (detected above 100 WordNet-id folders)")
