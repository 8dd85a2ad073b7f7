"""Decode-once cache: the first load of a folder / archive writes uint8 ``.npy`` arrays.

Layout, under ``$ROBUSTLENS_CACHE`` (default ``~/.cache/robustlens``)::

    data/<key>/<split>.images.npy   uint8 (N, C, H, W), memory-mapped on later loads
    data/<key>/<split>.labels.npy   int64 (N,)
    data/<key>/<split>.boxes.npy    float32 (N, 4), when the source has boxes
    data/<key>/meta.json            classes, per-split counts, source, reader options

``key`` hashes the absolute path, its size and modification time (for a folder: the number,
total size and latest modification time of its files), the target size, resampling, channels
and format, so a changed source or other options never hit a stale entry. Every file is
written atomically and ``meta.json`` last: an entry without it (an interrupted first load)
is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from robustlens.data.base import ImageSet
from robustlens.io import atomic_path, write_json_atomic

CACHE_VERSION = 1


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$ROBUSTLENS_CACHE``, else ``~/.cache/robustlens``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("ROBUSTLENS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "robustlens"


def fingerprint(path: Path) -> dict:
    """Size and modification time of a file, or of all files under a folder."""
    path = path.resolve()
    if path.is_file():
        st = path.stat()
        return {"path": os.fspath(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    count, total, latest = 0, 0, path.stat().st_mtime_ns
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        latest = max(latest, os.stat(dirpath).st_mtime_ns)
        for f in filenames:
            st = os.stat(os.path.join(dirpath, f))
            count += 1
            total += st.st_size
            latest = max(latest, st.st_mtime_ns)
    return {"path": os.fspath(path), "files": count, "bytes": total, "mtime_ns": latest}


def cache_key(path: Path, fmt: str, options: dict) -> str:
    record = {"v": CACHE_VERSION, "format": fmt, "source": fingerprint(path),
              "options": {k: options.get(k) for k in ("size", "channels", "resample")}}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]


def entry_dir(path: Path, fmt: str, options: dict, cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "data" / cache_key(path, fmt, options)


def write_entry(entry: Path, sets: dict[str, ImageSet], source: Path, fmt: str, options: dict) -> None:
    """Write every split of ``sets`` under ``entry`` (atomically, ``meta.json`` last)."""
    entry.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, s in sets.items():
        for part, t in (("images", s.images), ("labels", s.labels), ("boxes", s.boxes)):
            if t is None:
                continue
            with atomic_path(entry / f"{split}.{part}.npy", suffix=".npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, t.contiguous().numpy())
        splits[split] = {"name": s.name, "images": len(s), "per_class": s.class_counts(),
                         "shape": list(s.images.shape[1:]), "boxes": s.boxes is not None,
                         "meta": s.meta}
    classes = next(iter(sets.values())).classes if sets else []
    write_json_atomic(entry / "meta.json", {"version": CACHE_VERSION, "source": os.fspath(source.resolve()),
                                            "format": fmt, "options": options, "classes": classes,
                                            "splits": splits})


def read_entry(entry: Path) -> dict[str, ImageSet] | None:
    """The cached splits (images memory-mapped), or ``None`` when there is no complete entry."""
    meta_file = entry / "meta.json"
    if not meta_file.exists():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        out = {}
        for split, info in meta["splits"].items():
            # copy-on-write map: pages are read lazily and the tensor is writable
            images = torch.from_numpy(np.load(entry / f"{split}.images.npy", mmap_mode="c"))
            labels = torch.from_numpy(np.load(entry / f"{split}.labels.npy"))
            boxes = torch.from_numpy(np.load(entry / f"{split}.boxes.npy")) if info.get("boxes") else None
            if tuple(images.shape) != (info["images"], *info["shape"]):
                return None
            out[split] = ImageSet(images=images, labels=labels, classes=list(meta["classes"]), name=info["name"],
                                  boxes=boxes, meta={**info.get("meta", {}), "cache": os.fspath(entry)})
        return out
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
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
        write_entry(entry, sets, path, fmt, {k: options.get(k) for k in ("size", "channels", "resample")})
    except OSError as e:  # a read-only or full cache must not stop the load
        import warnings

        warnings.warn(f"robustlens: could not write the data cache at {entry} ({e}); continuing without it")
    return sets
