"""One way to name a data source everywhere (CLI and Python).

A source is either ``"trifeature"`` / ``"trifeature:key=value,..."`` (the procedural set,
:mod:`robustlens.data.trifeature`), or a path to a folder, archive or file whose format is
detected from the path (:mod:`robustlens.data.formats`; ``format=`` forces one).

    load("trifeature:size=64,contrast=0.18", split="test")
    load("trifeature", split="test", size=64, contrast=0.18)     # the same
    load_splits("../shared/data/cifar10-jpeg.tar.gz")            # {"train": ..., "test": ...}
"""

from __future__ import annotations

import os
from pathlib import Path

from robustlens.data.base import ImageSet
from robustlens.errors import UserError

PROCEDURAL = ("trifeature",)


def parse_source(source: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """Split ``"name:key=value,..."`` into ``(name, {key: value})`` for procedural sources.

    Paths are returned as ``(path, {})``.
    """
    text = os.fspath(source)
    head, sep, rest = text.partition(":")
    if head.strip().lower() not in PROCEDURAL:
        return text, {}
    options: dict[str, str] = {}
    if sep and rest.strip():
        for item in rest.split(","):
            item = item.strip()
            if not item:
                continue
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise UserError(f"{text!r}: option {item!r} is not key=value")
            key = key.strip()
            if key in options:
                raise UserError(f"{text!r}: option {key!r} given twice")
            options[key] = value.strip()
    return head.strip().lower(), options


def is_procedural(source: str | os.PathLike) -> bool:
    return parse_source(source)[0] in PROCEDURAL


MAX_SIZE = 4096  # the largest image side a source is resized to (one RGB image there: 48 MiB)


def size_memory(size: int) -> str:
    """What ``size`` costs as uint8 RGB, said for a message about a too large size."""
    from robustlens.data.readers.base import gib

    return f"one {size}x{size} RGB image takes {gib(3 * size * size)}, 10,000 of them {gib(3e4 * size * size)}"


def _check_size(size) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool):
        raise UserError(f"size={size!r}: expected a positive integer")
    try:
        value = int(size) if not isinstance(size, float) or float(size).is_integer() else None
    except (TypeError, ValueError):
        value = None
    if value is None or value <= 0:
        raise UserError(f"size={size!r}: expected a positive integer")
    if value > MAX_SIZE:
        raise UserError(f"size={size!r}: expected at most {MAX_SIZE} ({size_memory(value)})")
    return value


def _procedural_preprocessing(source, options: dict) -> None:
    """The procedural set is rendered at its size: ``preprocessing`` may only be ``"squash"``."""
    pre = options.pop("preprocessing", None)
    if pre not in (None, "squash"):
        raise UserError(f"preprocessing={pre!r} does not apply to the procedural source {os.fspath(source)!r} "
                        "(it is rendered at its size); use preprocessing='squash'")


def _trifeature_config(source: str | os.PathLike, size, options: dict):
    from robustlens.data.trifeature import TrifeatureConfig

    _, parsed = parse_source(source)
    merged: dict = dict(parsed)
    for key, value in options.items():
        if key in merged:
            raise UserError(f"trifeature option {key!r} given both in the source string and as an argument")
        merged[key] = value
    if size is not None:
        if "size" in merged and str(merged["size"]).strip() != str(size):
            raise UserError(f"trifeature: size given twice ({merged['size']} and {size})")
        merged["size"] = size
    return TrifeatureConfig.from_options(merged)


def load(
    source: str | os.PathLike,
    split: str = "train",
    size: int | None = None,
    format: str | None = None,
    cache: bool = True,
    **options,
) -> ImageSet:
    """Load one split of ``source`` as an :class:`ImageSet`.

    Args:
        source: ``"trifeature[:key=value,...]"`` or a path (folder, archive, file).
        split: ``"train"``, ``"test"``, ``"conflict"`` (trifeature), ``"val"``... For an on-disk
            source without splits, ``"train"`` (or ``"all"``) gives the whole set.
        size: resize to ``size x size`` (on-disk sources) or the generated side (trifeature).
        format: force an on-disk format (see :data:`robustlens.data.formats.FORMATS`).
        cache: decode on-disk folders/archives once into a memory-mappable cache
            (:mod:`robustlens.data.cache`).
        options: trifeature options (``contrast=0.18``...) or reader options (``channels=3``...).
    """
    size = _check_size(size)
    if is_procedural(source):
        from robustlens.data.trifeature import generate

        if format is not None:
            raise UserError(f"format={format!r} does not apply to the procedural source {os.fspath(source)!r}")
        _procedural_preprocessing(source, options)
        cfg = _trifeature_config(source, size, options)
        out = generate(cfg, split)
        out.meta["source_string"] = os.fspath(source)
        return out
    return load_splits(source, size=size, format=format, cache=cache, splits=[split], **options)[split]


def load_splits(
    source: str | os.PathLike,
    size: int | None = None,
    format: str | None = None,
    cache: bool = True,
    splits: list[str] | None = None,
    **options,
) -> dict[str, ImageSet]:
    """All splits of ``source`` (or those named in ``splits``), keyed by split name."""
    size = _check_size(size)
    if is_procedural(source):
        from robustlens.data.trifeature import SPLITS, generate

        if format is not None:
            raise UserError(f"format={format!r} does not apply to the procedural source {os.fspath(source)!r}")
        _procedural_preprocessing(source, options)
        cfg = _trifeature_config(source, size, options)
        out = {}
        for s in splits or SPLITS:
            out[s] = generate(cfg, s)
            out[s].meta["source_string"] = os.fspath(source)
        return out
    from robustlens.data.formats import read_splits

    path = Path(os.fspath(source)).expanduser()
    _check_preprocessing(path, format, options)
    return read_splits(path, size=size, format=format, cache=cache, splits=splits, **options)


def _check_preprocessing(path: Path, format: str | None, options: dict) -> None:
    """``preprocessing=`` names one of :data:`robustlens.names.PREPROCESSING`; other than
    ``"squash"`` only for a format whose reader takes it (``folder``, ``imagenet``)."""
    from robustlens.data.readers.preprocess import check_preprocessing

    name = check_preprocessing(options.get("preprocessing"))
    if name == "squash":
        return
    from robustlens.data.formats import READERS, detect_format

    fmt = format or detect_format(path)
    if "preprocessing" not in READERS.get(fmt).options:
        takes = [n for n, r in READERS.items() if "preprocessing" in r.options]
        raise UserError(f"{path}: preprocessing={name!r}: format {fmt!r} has no preprocessing choice (only "
                        f"{', '.join(takes)} decode image files of any size); use preprocessing='squash'")
