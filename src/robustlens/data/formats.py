"""Readers of on-disk image-classification formats into :class:`ImageSet` splits.

Formats (``FORMATS``; detected from the path, ``format=`` forces one):

``folder``        ``root/<class>/*.jpg|jpeg|png|bmp|webp|gif|tif`` or ``root/<split>/<class>/...``
                  (split folders: train, test, val, valid, validation, ...). A single shared
                  top folder is skipped. Without split folders the one split is ``"train"``.
``archive``       the same layout read straight from a ``.tar`` / ``.tar.gz`` / ``.tgz`` /
                  ``.tar.bz2`` / ``.tar.xz`` (no extraction to disk).
``cifar``         CIFAR-10 (``data_batch_1..5``, ``test_batch``, ``batches.meta``) and CIFAR-100
                  (``train``, ``test``, ``meta``; option ``label="fine"|"coarse"``) python
                  batches, read with a restricted unpickler (below).
``idx``           MNIST / Fashion-MNIST IDX files (``train-images-idx3-ubyte[.gz]``,
                  ``t10k-...``); greyscale is kept as 1 channel unless ``channels=3``.
``svhn``          SVHN cropped digits ``train_32x32.mat`` / ``test_32x32.mat`` / ``extra_32x32.mat``
                  (label 10 means digit 0).
``stl10``         STL-10 binary ``train_X.bin`` + ``train_y.bin`` (labels 1..10), column-major
                  3x96x96 images; ``unlabeled_X.bin`` is skipped.
``tinyimagenet``  Tiny ImageNet 200 (``wnids.txt``, ``train/<wnid>/images/*.JPEG`` with
                  ``<wnid>_boxes.txt``, ``val/images`` + ``val/val_annotations.txt``); fills
                  ``boxes`` (inclusive corners in the files -> exclusive here, rescaled with the
                  images).

Options common to all: ``size`` (resize to size x size: PIL for decoded files, antialiased
``torch.nn.functional.interpolate`` for arrays), ``resample`` ("bilinear", "bicubic",
"nearest"), ``channels`` (1 or 3; default 3 for decoded files, native for arrays),
``num_workers`` (decoding processes; default: all cores), ``cache`` (see
:mod:`robustlens.data.cache`; used for ``folder``, ``archive`` and ``tinyimagenet``).

Security: CIFAR batches are pickles. They are read with an unpickler that refuses every
global except the three numpy functions needed to rebuild an array (``_reconstruct``,
``ndarray``, ``dtype``) and ``_codecs.encode`` (how Python 3 pickles ``bytes`` at protocol 2),
so a batch cannot run code.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import multiprocessing as mp
import os
import pickle
import struct
import sys
import tarfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from robustlens.data.base import ImageSet
from robustlens.errors import UserError

FORMATS: tuple[str, ...] = ("folder", "archive", "cifar", "idx", "svhn", "stl10", "tinyimagenet")
CACHED_FORMATS = ("folder", "archive", "tinyimagenet")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "test": "test", "testing": "test",
    "val": "val", "valid": "val", "validation": "val",
}
RESAMPLE = ("bilinear", "bicubic", "nearest")
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
READER_OPTIONS = ("channels", "resample", "num_workers", "label", "cache_dir")


# =================================================================================== helpers
def _err(path: str | os.PathLike, what: str) -> UserError:
    return UserError(f"{os.fspath(path)}: {what}")


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def _check_resample(resample: str) -> str:
    if resample not in RESAMPLE:
        raise UserError(f"resample={resample!r}: expected one of {', '.join(RESAMPLE)}")
    return resample


def _check_channels(channels) -> int | None:
    if channels is None:
        return None
    try:
        c = int(channels)
    except (TypeError, ValueError):
        c = -1
    if c not in (1, 3):
        raise UserError(f"channels={channels!r}: expected 1 or 3")
    return c


def resize_uint8(images: torch.Tensor, size: int | None, resample: str = "bilinear", chunk: int = 2048) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) to (N, C, size, size) with antialiased interpolation."""
    if size is None or tuple(images.shape[2:]) == (size, size):
        return images
    out = torch.empty(images.shape[0], images.shape[1], size, size, dtype=torch.uint8)
    for a in range(0, images.shape[0], chunk):
        x = images[a : a + chunk].float()
        if resample == "nearest":
            y = F.interpolate(x, size=(size, size), mode="nearest-exact")
        else:
            y = F.interpolate(x, size=(size, size), mode=resample, align_corners=False, antialias=True)
        out[a : a + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _convert_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    if channels is None or images.shape[1] == channels:
        return images
    if channels == 3 and images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and images.shape[1] == 3:  # ITU-R 601-2 luma, as PIL's convert("L")
        w = torch.tensor([299, 587, 114], dtype=torch.int32).view(1, 3, 1, 1)
        return ((images.to(torch.int32) * w).sum(1, keepdim=True) + 500).div(1000, rounding_mode="floor").to(torch.uint8)
    raise AssertionError((images.shape, channels))


def _imageset(images, labels, classes, name, meta, boxes=None) -> ImageSet:
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
        raise UserError(
            f"{name}: labels span {int(labels.min())}..{int(labels.max())} but there are {len(classes)} classes"
        )
    return ImageSet(images=images, labels=labels, classes=list(classes), name=name, boxes=boxes, meta=meta)


# ============================================================================== decoding
def decode_image(source: Path | bytes, size: int | None, channels: int = 3, resample: str = "bilinear",
                 name: str | None = None) -> np.ndarray:
    """Decode one image file (path or its bytes) to uint8 (H, W, C), resized to ``size``.

    Raises :class:`UserError` naming the file when it cannot be decoded.
    """
    from PIL import Image

    label = name or (os.fspath(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            mode = "L" if channels == 1 else "RGB"
            if im.mode != mode:
                im = im.convert(mode)
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), _pil_resample(resample))
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # PIL raises many types for corrupt files
        raise UserError(f"{label}: cannot decode image ({type(e).__name__}: {e})") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def _pil_resample(resample: str):
    from PIL import Image

    return {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST}[resample]


def _decode_chunk(args) -> tuple[str, object]:
    """Worker: decode a list of (name, path-or-bytes); ('ok', array) or ('error', message)."""
    items, size, channels, resample = args
    out = []
    try:
        for name, src in items:
            if isinstance(src, tuple):  # (start, end) in the archive buffer inherited through fork
                src = bytes(_SHARED[0][src[0] : src[1]])
            out.append(decode_image(src if isinstance(src, bytes) else Path(src), size, channels, resample, name))
    except UserError as e:
        return "error", str(e)
    shapes = {a.shape for a in out}
    if len(shapes) > 1:
        return "sizes", [(n, a.shape) for (n, _), a in zip(items, out)]
    return "ok", np.stack(out) if out else None


_SHARED: list = [b""]  # the decompressed archive, readable by forked decoding workers


def _mp_context():
    # fork: workers start instantly and only use PIL/numpy (no torch, no threads).
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")
    return mp.get_context()


def decode_many(
    items: Iterable[tuple[str, Path | bytes | str]],
    size: int | None,
    channels: int = 3,
    resample: str = "bilinear",
    num_workers: int | None = None,
    desc: str = "decoding",
    total: int | None = None,
) -> torch.Tensor:
    """Decode many images with ``num_workers`` processes -> uint8 (N, C, H, W), in input order.

    ``items`` may be a generator (e.g. members streamed out of an archive): chunks are handed
    to the workers as soon as they are read, so reading and decoding overlap.
    """
    from concurrent.futures import Future

    from tqdm import tqdm

    workers = max(1, min(num_workers or os.cpu_count() or 1, 32))
    if total is None and isinstance(items, Sequence):
        total = len(items)
    per = 512 if total is None else max(16, min(1024, total // (workers * 8) + 1))
    bar = tqdm(total=total, desc=desc, unit="img", disable=not sys.stderr.isatty(), leave=False)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context()) if workers > 1 else None
    jobs: list[tuple[list, Future | tuple]] = []

    def submit(chunk: list) -> None:
        args = (chunk, size, channels, resample)
        jobs.append((chunk, pool.submit(_decode_chunk, args) if pool is not None else _decode_chunk(args)))

    results = []
    try:
        chunk: list = []
        for item in items:
            chunk.append(item)
            if len(chunk) == per:
                submit(chunk)
                chunk = []
        if chunk:
            submit(chunk)
        for chunk, job in jobs:
            status, value = job.result() if pool is not None else job
            if status == "error":
                raise UserError(str(value))
            if status == "sizes":
                _different_sizes(value)
            results.append((chunk[0][0], value))
            bar.update(len(chunk))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    shapes = {r.shape[1:] for _, r in results}
    if len(shapes) > 1:
        firsts: dict = {}
        for name, r in results:
            firsts.setdefault(r.shape[1:], name)
        _different_sizes([(n, s) for s, n in firsts.items()])
    if not results:
        return torch.zeros((0, channels, size or 1, size or 1), dtype=torch.uint8)
    arr = np.concatenate([r for _, r in results])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def _different_sizes(named_shapes) -> None:
    seen: dict = {}
    for name, shape in named_shapes:
        seen.setdefault(tuple(shape[:2]), name)
    (s1, n1), (s2, n2) = list(seen.items())[:2]
    raise UserError(
        f"images have different sizes ({n1} is {s1[1]}x{s1[0]}, {n2} is {s2[1]}x{s2[0]}); pass size=N to resize them"
    )


# ============================================================================ layouts
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


FAST_TAR_LIMIT = 2 << 30  # archives up to 2 GiB are decompressed in memory and parsed directly


def _decompress(raw: bytes) -> bytes:
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    if raw[:3] == b"BZh":
        return bz2.decompress(raw)
    if raw[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(raw)
    return raw


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:
        raise ValueError("base-256 number")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def tar_index(buf: bytes | memoryview) -> list[tuple[str, int, int]]:
    """``(name, start, end)`` of every regular file in an uncompressed tar (ustar, GNU long
    names, pax ``path`` records), from the POSIX.1-1988/2001 header layout; header checksums
    are verified. Raises ``ValueError`` on anything else (the caller falls back to ``tarfile``).
    """
    out = []
    off, n = 0, len(buf)
    next_name: str | None = None
    while off + 512 <= n:
        hdr = bytes(buf[off : off + 512])
        if hdr == b"\0" * 512:
            break
        if _octal(hdr[148:156]) != sum(hdr[:148]) + 256 + sum(hdr[156:]):
            raise ValueError(f"bad header checksum at byte {off}")
        size = _octal(hdr[124:136])
        kind = hdr[156:157]
        start = off + 512
        end = start + size
        if end > n:
            raise ValueError("truncated archive")
        name = hdr[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if hdr[257:263] == b"ustar\x00" and hdr[345:346] != b"\0":  # POSIX ustar name prefix
            prefix = hdr[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            name = f"{prefix}/{name}"
        if kind == b"L":  # GNU long name for the next member
            next_name = bytes(buf[start:end]).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif kind in (b"x", b"g"):  # pax extended header
            rec = bytes(buf[start:end])
            while rec:
                length = int(rec.split(b" ", 1)[0])
                key, _, value = rec[:length].split(b" ", 1)[1].rstrip(b"\n").partition(b"=")
                if key == b"path" and kind == b"x":
                    next_name = value.decode("utf-8", "surrogateescape")
                elif key == b"size" and kind == b"x":
                    raise ValueError("pax size override")
                rec = rec[length:]
        elif kind in (b"0", b"\0", b"7"):
            if next_name is not None:
                name, next_name = next_name, None
            out.append((name, start, end))
        elif kind in (b"S",):
            raise ValueError("sparse member")
        else:
            next_name = None
        off = start + (size + 511) // 512 * 512
    return out


def _image_member(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def read_archive(path: Path, size=None, channels=3, resample="bilinear", num_workers=None) -> dict[str, ImageSet]:
    """An image-folder layout straight from a tar archive, without extracting it.

    Archives up to ``FAST_TAR_LIMIT`` are decompressed in memory and their headers parsed
    directly (:func:`tar_index`); forked decoding workers read the images out of that buffer
    (no copy through pipes). Larger or unusual archives are streamed with :mod:`tarfile`.
    """
    names: list[str] = []
    fast = None
    if path.stat().st_size <= FAST_TAR_LIMIT:
        try:
            buf = _decompress(path.read_bytes())
            fast = (buf, [m for m in tar_index(memoryview(buf)) if _image_member(m[0])])
        except (ValueError, OSError, EOFError, zlib.error, lzma.LZMAError):
            fast = None
    if fast is not None:
        buf, index = fast
        names = [n[2:] if n.startswith("./") else n for n, _, _ in index]
        fork = _mp_context().get_start_method() == "fork"
        items = [(f"{path}:{n}", (a, b) if fork else buf[a:b]) for n, (_, a, b) in zip(names, index)]
        _SHARED[0] = buf
        try:
            images = decode_many(items, size, channels or 3, resample, num_workers, desc=f"decoding {path.name}")
        finally:
            _SHARED[0] = b""
    else:
        def members():
            try:
                with tarfile.open(path, "r|*") as tf:  # streaming: one pass over the compressed file
                    for m in tf:
                        if not m.isfile() or not _image_member(m.name):
                            continue
                        f = tf.extractfile(m)
                        name = m.name[2:] if m.name.startswith("./") else m.name
                        names.append(name)
                        yield f"{path}:{name}", (f.read() if f is not None else b"")
            except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as e:
                raise _err(path, f"not a readable tar archive ({type(e).__name__}: {e})") from None

        images = decode_many(members(), size, channels or 3, resample, num_workers, desc=f"decoding {path.name}")
    if not names:
        raise _err(path, f"no images ({', '.join(IMAGE_EXTENSIONS[:5])}, ...) found in the archive")
    order = sorted(range(len(names)), key=lambda i: names[i])
    names = [names[i] for i in order]
    images = images[torch.tensor(order, dtype=torch.long)]
    classes, splits = folder_layout(names, os.fspath(path))
    stem = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return _split_sets(images, classes, splits, stem, {"source": os.fspath(path), "format": "archive"})


# ================================================================================= CIFAR
class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; every other global is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data batch")
        if module == "_codecs":
            import _codecs

            return _codecs.encode
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def load_pickle(path: Path) -> dict:
    """A CIFAR python batch as a dict with ``str`` keys (restricted unpickling)."""
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise _err(path, f"not a CIFAR python batch ({e})") from None
    if not isinstance(obj, dict):
        raise _err(path, f"not a CIFAR python batch (a {type(obj).__name__}, expected a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_root(path: Path) -> Path:
    for sub in ("cifar-10-batches-py", "cifar-100-python"):
        if (path / sub).is_dir():
            return path / sub
    return path


def read_cifar(path: Path, size=None, channels=None, resample="bilinear", label: str = "fine", **_) -> dict[str, ImageSet]:
    root = _cifar_root(path if path.is_dir() else path.parent)
    if (root / "batches.meta").exists() or (root / "data_batch_1").exists():
        kind = "cifar10"
        files = {"train": sorted(root.glob("data_batch_*")), "test": [root / "test_batch"]}
        meta_file, names_key, labels_key = root / "batches.meta", "label_names", "labels"
    elif (root / "meta").exists() and ((root / "train").is_file() or (root / "test").is_file()):
        kind = "cifar100"
        if label not in ("fine", "coarse"):
            raise UserError(f"label={label!r}: expected 'fine' or 'coarse' for CIFAR-100")
        files = {"train": [root / "train"], "test": [root / "test"]}
        meta_file, names_key, labels_key = root / "meta", f"{label}_label_names", f"{label}_labels"
    else:
        raise _err(path, "no CIFAR batches found (expected data_batch_1..5 + test_batch + batches.meta, "
                         "or CIFAR-100's train + test + meta)")
    classes = None
    if meta_file.exists():
        m = load_pickle(meta_file)
        if names_key not in m:
            raise _err(meta_file, f"no {names_key!r} entry (has {', '.join(map(str, m))})")
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in m[names_key]]
    out = {}
    for split, batch_files in files.items():
        batch_files = [f for f in batch_files if f.exists()]
        if not batch_files:
            continue
        datas, labels = [], []
        for f in batch_files:
            b = load_pickle(f)
            for key in ("data", labels_key):
                if key not in b:
                    raise _err(f, f"no {key!r} entry (has {', '.join(map(str, b))})")
            data = np.asarray(b["data"], dtype=np.uint8)
            lab = np.asarray(b[labels_key], dtype=np.int64)
            if data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
                raise _err(f, f"expected data of shape (N, 3072) and N labels, got {data.shape} and {len(lab)}")
            datas.append(data)
            labels.append(lab)
        images = torch.from_numpy(np.concatenate(datas).reshape(-1, 3, 32, 32).copy())
        images = resize_uint8(_convert_channels(images, channels), size, resample)
        lab = torch.from_numpy(np.concatenate(labels))
        cls = classes or [str(i) for i in range(int(lab.max()) + 1)]
        out[split] = _imageset(images, lab, cls, f"{kind}/{split}", {"source": os.fspath(path), "format": "cifar",
                                                                     "kind": kind, "split": split})
    return out


# =================================================================================== IDX
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


# ================================================================================== SVHN
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


# ================================================================================ STL-10
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


# ========================================================================= Tiny ImageNet
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


def decode_image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file without decoding its pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:
        raise UserError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None


# ============================================================================ detection
def detect_format(path: Path) -> str:
    """The format of ``path`` from its name and contents (see :data:`FORMATS`)."""
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "wnids.txt").exists() or (path / "tiny-imagenet-200" / "wnids.txt").exists():
            return "tinyimagenet"
        root = _cifar_root(path)
        if (root / "batches.meta").exists() or (root / "data_batch_1").exists() or (
            (root / "meta").is_file() and (root / "train").is_file()
        ):
            return "cifar"
        if any(path.glob("*-idx3-ubyte*")) or any(path.glob("*.idx3-ubyte*")):
            return "idx"
        if any(path.glob("*_32x32.mat")):
            return "svhn"
        if (path / "train_X.bin").exists() or (path / "test_X.bin").exists():
            return "stl10"
        return "folder"
    name = path.name.lower()
    if is_archive(path):
        return "archive"
    if name.endswith(".mat"):
        return "svhn"
    if "idx1-ubyte" in name or "idx3-ubyte" in name:
        return "idx"
    if name.endswith("_x.bin") or name.endswith("_y.bin"):
        return "stl10"
    if name.startswith("data_batch") or name in ("test_batch", "batches.meta"):
        return "cifar"
    if name.endswith(IMAGE_EXTENSIONS):
        raise UserError(f"{path}: a single image is not a data set; give the folder holding <class>/<image> folders")
    raise UserError(f"{path}: cannot tell the format; pass format= one of {', '.join(FORMATS)}")


READERS = {
    "folder": read_folder,
    "archive": read_archive,
    "cifar": read_cifar,
    "idx": read_idx,
    "svhn": read_svhn,
    "stl10": read_stl10,
    "tinyimagenet": read_tinyimagenet,
}


def read_splits(
    path: Path,
    size: int | None = None,
    format: str | None = None,
    cache: bool | str | os.PathLike = True,
    splits: Sequence[str] | None = None,
    channels: int | None = None,
    resample: str = "bilinear",
    num_workers: int | None = None,
    **options,
) -> dict[str, ImageSet]:
    """All (or the named) splits of an on-disk source; decoded sets go through the cache."""
    unknown = sorted(set(options) - set(READER_OPTIONS))
    if unknown:
        raise UserError(
            f"{path}: unknown option(s) {', '.join(unknown)}; valid options: size, format, cache, "
            f"{', '.join(READER_OPTIONS)}"
        )
    if format is not None and format not in FORMATS:
        raise UserError(f"format={format!r}: unknown; valid formats: {', '.join(FORMATS)}")
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    fmt = format or detect_format(path)
    if fmt == "folder" and not path.is_dir():
        raise _err(path, "format 'folder' needs a folder")
    if fmt == "archive" and not path.is_file():
        raise _err(path, "format 'archive' needs a .tar / .tar.gz / .tgz file")
    channels = _check_channels(channels)
    _check_resample(resample)
    kw = {"size": size, "channels": channels, "resample": resample}
    if fmt in ("folder", "archive", "tinyimagenet"):
        kw["num_workers"] = num_workers
    if fmt == "cifar" and "label" in options:
        kw["label"] = options["label"]
    reader = READERS[fmt]
    if cache and fmt in CACHED_FORMATS:
        from robustlens.data.cache import cached_read

        cache_dir = options.get("cache_dir") or (cache if not isinstance(cache, bool) else None)
        out = cached_read(path, fmt, kw, lambda: reader(path, **kw), cache_dir)
    else:
        out = reader(path, **kw)
    if splits is not None:
        missing = [s for s in splits if _alias(s, out) not in out]
        if missing:
            raise UserError(f"{path}: no split {missing[0]!r}; it has {', '.join(out)}")
        out = {s: out[_alias(s, out)] for s in splits}
    return out


def _alias(split: str, out: dict) -> str:
    """The stored split a requested name refers to: ``valid`` / ``validation`` -> ``val``; a
    source with a single split answers ``train`` / ``all`` with it; and ``test`` falls back to
    ``val`` where a source has no test split (ImageNet, Imagenette: their ``val`` split is the
    held-out evaluation set), the rule the study's data stage uses too."""
    s = SPLIT_NAMES.get(split.lower(), split)
    if s not in out and split in ("all", "train") and len(out) == 1:
        return next(iter(out))
    if s == "test" and s not in out and "val" in out:
        return "val"
    return s
