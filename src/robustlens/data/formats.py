"""Reading on-disk image-classification formats into :class:`ImageSet` splits.

The readers live in :mod:`robustlens.data.readers`, one module per format, each registered in
:data:`READERS` with what this module must know about it (:class:`~robustlens.data.readers.Reader`:
its options, whether it is cached, what the path must be, how it is detected). This module holds
the two entry points, :func:`detect_format` and :func:`read_splits`, and re-exports the helpers
other modules use.

Formats (``FORMATS``; detected from the path, ``format=`` forces one): ``folder``, ``archive``,
``cifar``, ``idx``, ``svhn``, ``stl10``, ``tinyimagenet`` (see each reader's module).

Options common to all: ``size`` (resize to size x size: PIL for decoded files, antialiased
``torch.nn.functional.interpolate`` for arrays), ``resample`` ("bilinear", "bicubic",
"nearest"), ``channels`` (1 or 3; default 3 for decoded files, native for arrays),
``num_workers`` (decoding processes; default: all cores), ``cache`` (see
:mod:`robustlens.data.cache`; used for the readers that decode image files: ``folder``,
``archive`` and ``tinyimagenet``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from robustlens.data.base import ImageSet
from robustlens.data.readers import READERS
from robustlens.data.readers.archive import tar_index
from robustlens.data.readers.base import IMAGE_EXTENSIONS, RESAMPLE, SPLIT_NAMES, _err, resize_uint8
from robustlens.data.readers.decode import decode_image
from robustlens.data.readers.folder import scan_folder
from robustlens.errors import UserError
from robustlens.names import FORMATS

# re-exported for the loader (decode_image, scan_folder, SPLIT_NAMES) and the tests
__all__ = ["FORMATS", "READERS", "READER_OPTIONS", "SPLIT_NAMES", "detect_format", "read_splits", "decode_image",
           "scan_folder", "tar_index", "resize_uint8"]

# the options read_splits accepts beyond size / format / cache: every reader's, then cache_dir
READER_OPTIONS = ("channels", "resample", *dict.fromkeys(o for _, r in READERS.items() for o in r.options), "cache_dir")


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


def detect_format(path: Path) -> str:
    """The format of ``path`` from its name and contents (see :data:`FORMATS`): the readers'
    :class:`~robustlens.data.readers.Detect` tests, lowest rank first."""
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir():
        tests = sorted((r.folder.rank, n, r.folder.test) for n, r in READERS.items() if r.folder is not None)
        return next(n for _, n, test in tests if test(path))  # ``folder`` takes any folder
    name = path.name.lower()
    tests = sorted((r.file.rank, n, r.file.test) for n, r in READERS.items() if r.file is not None)
    for _, fmt, test in tests:
        if test(name):
            return fmt
    if name.endswith(IMAGE_EXTENSIONS):
        raise UserError(f"{path}: a single image is not a data set; give the folder holding <class>/<image> folders")
    raise UserError(f"{path}: cannot tell the format; pass format= one of {', '.join(FORMATS)}")


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
    reader = READERS.get(fmt)
    if reader.needs is not None and not reader.needs(path):
        raise _err(path, f"format {fmt!r} needs {reader.needs_text}")
    channels = _check_channels(channels)
    _check_resample(resample)
    given = {"num_workers": num_workers, **options}
    kw = {"size": size, "channels": channels, "resample": resample,
          **{k: given[k] for k in reader.options if k in given}}
    if cache and reader.cached:
        from robustlens.data.cache import cached_read

        cache_dir = options.get("cache_dir") or (cache if not isinstance(cache, bool) else None)
        out = cached_read(path, fmt, kw, lambda: reader.read(path, **kw), cache_dir)
    else:
        out = reader.read(path, **kw)
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
