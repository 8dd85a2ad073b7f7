"""``archive``: the ``folder`` layout read straight from a ``.tar`` / ``.tar.gz`` / ``.tgz`` /
``.tar.bz2`` / ``.tar.xz`` (no extraction to disk).

Headers are parsed directly (:func:`tar_index`, after the POSIX.1-1988/2001 ustar and pax
layouts) where the archive fits in memory; anything else is streamed with :mod:`tarfile`.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import tarfile
import zlib
from pathlib import Path

import torch

from robustlens.data.base import ImageSet
from robustlens.data.readers.base import ARCHIVE_SUFFIXES, IMAGE_EXTENSIONS, READERS, Detect, Reader, _err, is_archive
from robustlens.data.readers.decode import _SHARED, _mp_context, decode_many
from robustlens.data.readers.folder import _split_sets, folder_layout

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


READERS.add("archive", Reader(
    read_archive, options=("num_workers",), cached=True, needs=Path.is_file,
    needs_text="a .tar / .tar.gz / .tgz file", file=Detect(lambda name: is_archive(Path(name)), rank=0),
), "the folder layout inside a .tar / .tar.gz / .tgz / .tar.bz2 / .tar.xz")
