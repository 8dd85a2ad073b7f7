"""Decode-once cache: the first load of a folder / archive writes uint8 ``.npy`` arrays.

Layout, under ``$ROBUSTLENS_CACHE`` (default ``~/.cache/robustlens``)::

    data/<key>/<split>.images.npy   uint8 (N, C, H, W), memory-mapped on later loads
    data/<key>/<split>.rows.npy     uint8 (N, 8): a BLAKE2b digest of every image row
    data/<key>/<split>.labels.npy   int64 (N,)
    data/<key>/<split>.boxes.npy    float32 (N, 4), when the source has boxes
    data/<key>/meta.json            classes, per-split counts and digests, source, reader options

``key`` hashes the source's fingerprint (:func:`fingerprint`: the content of an archive up to
``HASH_LIMIT`` bytes; else, per file, its path, size, modification and change times), the
target size, resampling, channels and format, and the reader options of :data:`KEYED_OPTIONS`
set away from their defaults (``preprocessing``, the ImageNet reader's ``limit``), so a changed source or other options never hit
a stale entry: a file rewritten with the same size and an older (or the same) modification
time, as ``tar`` and ``rsync -t`` restore it, still changes its change time.

Every file is written atomically and ``meta.json`` last: an entry without it (an interrupted
first load) is ignored and rewritten. A read checks the digests of the labels, boxes and row
table in full and of ``VERIFY_ROWS`` image rows drawn afresh each time, so a damaged entry is
decoded again (with a warning) instead of serving wrong pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from robustlens.data.base import ImageSet
from robustlens.data.readers.walk import DataWarning, walk_files
from robustlens.io import atomic_path, write_json_atomic

CACHE_VERSION = 2
HASH_LIMIT = 256 << 20  # an archive up to 256 MiB is fingerprinted by its content (about 0.3 s)
VERIFY_ROWS = 64  # image rows whose digests each read checks (all of them in a smaller split)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$ROBUSTLENS_CACHE``, else ``~/.cache/robustlens``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("ROBUSTLENS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "robustlens"


def _file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: Path) -> dict:
    """What identifies the source's contents: for a file up to ``HASH_LIMIT`` bytes its
    BLAKE2b digest; for a larger one its size, modification and change times and inode; for a
    folder a digest over each of its files' (relative path, size, modification time, change
    time), the files being those :func:`~robustlens.data.readers.walk.walk_files` lists."""
    path = path.resolve()
    st = path.stat()
    if path.is_file():
        if st.st_size <= HASH_LIMIT:
            return {"path": os.fspath(path), "bytes": st.st_size, "blake2b": _file_hash(path)}
        return {"path": os.fspath(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
                "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}
    h = hashlib.blake2b(digest_size=16)
    count = total = 0
    cut = len(os.fspath(path)) + 1
    for f in walk_files(path):
        fs = os.stat(f)
        h.update(f"{f[cut:]}\0{fs.st_size}\0{fs.st_mtime_ns}\0{fs.st_ctime_ns}\n".encode("utf-8", "surrogateescape"))
        count += 1
        total += fs.st_size
    return {"path": os.fspath(path), "files": count, "bytes": total, "files_blake2b": h.hexdigest()}


#: reader options that change the decoded pixels or the images read, beyond size / channels /
#: resample, keyed only when set away from their default (so the keys of earlier entries hold)
KEYED_OPTIONS = {"preprocessing": "squash", "limit": None, "limit_seed": None}


def keyed_options(options: dict) -> dict:
    """What of the reader ``options`` the cache entry depends on (and records)."""
    out = {k: options.get(k) for k in ("size", "channels", "resample")}
    out.update({k: options[k] for k, default in KEYED_OPTIONS.items() if options.get(k, default) != default})
    return out


def cache_key(path: Path, fmt: str, options: dict) -> str:
    record = {"v": CACHE_VERSION, "format": fmt, "source": fingerprint(path), "options": keyed_options(options)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]


def entry_dir(path: Path, fmt: str, options: dict, cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "data" / cache_key(path, fmt, options)


def _digest(arr: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(arr), digest_size=16).hexdigest()


def _row_digests(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 8): the 8-byte BLAKE2b digest of each image (row of ``images``)."""
    digests = b"".join(hashlib.blake2b(row, digest_size=8).digest() for row in images)
    return np.frombuffer(digests, np.uint8).reshape(len(images), 8).copy()


def write_entry(entry: Path, sets: dict[str, ImageSet], source: Path, fmt: str, options: dict) -> None:
    """Write every split of ``sets`` under ``entry`` (atomically, ``meta.json`` last), with the
    digests :func:`read_entry` checks."""
    entry.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, s in sets.items():
        images = s.images.contiguous().numpy()
        arrays = {"images": images, "rows": _row_digests(images), "labels": s.labels.contiguous().numpy(),
                  "boxes": None if s.boxes is None else s.boxes.contiguous().numpy()}
        for part, a in arrays.items():
            if a is None:
                continue
            with atomic_path(entry / f"{split}.{part}.npy", suffix=".npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, a)
        splits[split] = {"name": s.name, "images": len(s), "per_class": s.class_counts(),
                         "shape": list(s.images.shape[1:]), "boxes": s.boxes is not None,
                         "digests": {k: _digest(a) for k, a in arrays.items() if k != "images" and a is not None},
                         "meta": s.meta}
    classes = next(iter(sets.values())).classes if sets else []
    write_json_atomic(entry / "meta.json", {"version": CACHE_VERSION, "source": os.fspath(source.resolve()),
                                            "format": fmt, "options": options, "classes": classes,
                                            "splits": splits})


def _damage(split: str, info: dict, arrays: dict[str, np.ndarray | None]) -> str | None:
    """What is wrong with one cached split, or ``None``: the shape, the digests of the labels,
    boxes and row table, and of ``VERIFY_ROWS`` image rows drawn afresh (numpy's own entropy,
    so no seeded random stream moves)."""
    images = arrays["images"]
    if tuple(images.shape) != (info["images"], *info["shape"]):
        return f"{split}.images.npy has shape {tuple(images.shape)}"
    for part, want in info["digests"].items():
        if arrays[part] is None or _digest(arrays[part]) != want:
            return f"{split}.{part}.npy does not match its digest"
    rows = arrays["rows"]
    n = len(images)
    pick = range(n) if n <= VERIFY_ROWS else np.random.default_rng().choice(n, VERIFY_ROWS, replace=False)
    for i in pick:
        if hashlib.blake2b(images[i], digest_size=8).digest() != rows[i].tobytes():
            return f"image {int(i)} of {split}.images.npy does not match its digest"
    return None


def read_entry(entry: Path) -> dict[str, ImageSet] | None:
    """The cached splits (images memory-mapped), or ``None`` when there is no complete entry.

    A damaged entry (unreadable, or a digest that does not match) is ``None`` too, with a
    :class:`~robustlens.data.readers.walk.DataWarning`, so the caller decodes the source again.
    """
    meta_file = entry / "meta.json"
    if not meta_file.exists():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        out = {}
        for split, info in meta["splits"].items():
            # copy-on-write map: pages are read lazily and the tensor is writable
            arrays = {"images": np.load(entry / f"{split}.images.npy", mmap_mode="c")}
            for part in ("rows", "labels", "boxes"):
                f = entry / f"{split}.{part}.npy"
                arrays[part] = np.load(f) if part in info["digests"] else None
            problem = _damage(split, info, arrays)
            if problem is not None:
                return _damaged(entry, problem)
            boxes = None if arrays["boxes"] is None else torch.from_numpy(arrays["boxes"])
            out[split] = ImageSet(images=torch.from_numpy(arrays["images"]), labels=torch.from_numpy(arrays["labels"]),
                                  classes=list(meta["classes"]), name=info["name"], boxes=boxes,
                                  meta={**info.get("meta", {}), "cache": os.fspath(entry)})
        return out
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        return _damaged(entry, f"{type(e).__name__}: {e}")


def _damaged(entry: Path, problem: str) -> None:
    warnings.warn(f"robustlens: the data cache entry {entry} is damaged ({problem}); decoding the source again",
                  DataWarning, stacklevel=3)
    return None


def cached_read(
    path: Path,
    fmt: str,
    options: dict,
    read: Callable[[], dict[str, ImageSet]],
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, ImageSet]:
    """``read()`` once per (source, options); later calls read the cache entry."""
    entry = entry_dir(path, fmt, options, cache_dir)
    hit = read_entry(entry)
    if hit is not None:
        return hit
    sets = read()
    try:
        write_entry(entry, sets, path, fmt, keyed_options(options))
    except OSError as e:  # a read-only or full cache must not stop the load
        warnings.warn(f"robustlens: could not write the data cache at {entry} ({e}); continuing without it")
    return sets
