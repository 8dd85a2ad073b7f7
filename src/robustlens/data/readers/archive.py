"""``archive``: the ``folder`` layout read straight from a ``.tar`` / ``.tar.gz`` / ``.tgz`` /
``.tar.bz2`` / ``.tar.xz`` (no extraction to disk).

The archive is decompressed as a stream, in one pass: headers are parsed directly
(:func:`_tar_walk`, after the POSIX.1-1988/2001 ustar and pax layouts; anything it does not
know goes to :mod:`tarfile`), the bytes of the image members are kept in one buffer and every
other member is skipped without being held. Limits, each stated in its error: an image member
up to ``MAX_MEMBER_BYTES``, a long-name or pax header up to ``MAX_HEADER_BYTES``, the whole
archive up to ``MAX_ARCHIVE_BYTES`` decompressed (a small ``.tar.gz`` of zeros must not take
the machine's memory or hours).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import torch

from robustlens.data.base import ImageSet
from robustlens.data.readers.base import (
    ARCHIVE_SUFFIXES, IMAGE_EXTENSIONS, READERS, Detect, Reader, _err, gib, is_archive,
)
from robustlens.data.readers.decode import _SHARED, _mp_context, decode_many
from robustlens.data.readers.folder import _split_sets, folder_layout

MAX_MEMBER_BYTES = 256 << 20  # one image member of an archive
MAX_ARCHIVE_BYTES = 16 << 30  # a whole archive, decompressed
MAX_HEADER_BYTES = 1 << 20  # a GNU long name or a pax header
_LIMITS = "robustlens.data.readers.archive"


def _open(path: Path) -> BinaryIO:
    """The decompressed contents of ``path`` as a file (gzip, bzip2, xz or plain), by magic bytes."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic[:3] == b"BZh":
        return bz2.open(path, "rb")
    if magic[:6] == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    return open(path, "rb")


class _Capped:
    """A read-only stream over ``f`` that counts what it yields and refuses more than
    ``MAX_ARCHIVE_BYTES``; it reads ``f`` in 1 MiB blocks, so 512-byte header reads are cheap."""

    def __init__(self, f: BinaryIO, path: Path | str) -> None:
        self.f, self.path, self.pos = f, path, 0
        self._buf, self._off = b"", 0

    def read(self, n: int) -> bytes:
        while len(self._buf) - self._off < n:
            block = self.f.read(max(1 << 20, n - len(self._buf) + self._off))
            if not block:
                break
            self._buf, self._off = self._buf[self._off :] + block, 0
        data = self._buf[self._off : self._off + n]
        self._off += len(data)
        self.pos += len(data)
        if self.pos > MAX_ARCHIVE_BYTES:
            raise _err(self.path, f"decompresses to more than {gib(MAX_ARCHIVE_BYTES)}, the limit "
                       f"({_LIMITS}.MAX_ARCHIVE_BYTES); extract it and read the folder instead")
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            got = len(self.read(min(n, 1 << 20)))
            if not got:
                raise ValueError("truncated archive")
            n -= got


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:
        raise ValueError("base-256 number")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax_path(rec: bytes) -> str | None:
    """The ``path`` record of a pax extended header (a ``size`` record is left to tarfile)."""
    name = None
    while rec:
        length = int(rec.split(b" ", 1)[0])
        if length <= 0:
            raise ValueError("bad pax record length")
        key, _, value = rec[:length].split(b" ", 1)[1].rstrip(b"\n").partition(b"=")
        if key == b"path":
            name = value.decode("utf-8", "surrogateescape")
        elif key == b"size":
            raise ValueError("pax size override")
        rec = rec[length:]
    return name


def _tar_walk(stream: _Capped) -> Iterator[tuple[str, int]]:
    """``(name, size)`` of every regular file of an uncompressed tar read from ``stream`` (ustar,
    GNU long names, pax ``path`` records), from the POSIX.1-1988/2001 header layout, with the
    header checksums verified. After each, the consumer may read up to ``size`` bytes of the
    member from ``stream``; the rest and the padding are skipped here. Raises ``ValueError`` on
    anything else, a file that is not a tar included (the caller then asks ``tarfile``).
    """
    next_name: str | None = None
    first = True
    while True:
        hdr = stream.read(512)
        if not hdr and not first:  # no end-of-archive blocks: tolerated, as tarfile does
            return
        if len(hdr) < 512:
            raise ValueError("not a tar archive" if first else "truncated archive")
        if hdr == b"\0" * 512:
            return
        if _octal(hdr[148:156]) != sum(hdr) - sum(hdr[148:156]) + 256:  # the field counts as spaces
            raise ValueError(f"bad header checksum at byte {stream.pos - 512}")
        first = False
        size, kind = _octal(hdr[124:136]), hdr[156:157]
        padded = (size + 511) // 512 * 512
        name = hdr[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if hdr[257:263] == b"ustar\x00" and hdr[345:346] != b"\0":  # POSIX ustar name prefix
            name = hdr[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape") + "/" + name
        if kind in (b"L", b"x", b"g"):  # GNU long name / pax header of the next member
            if size > MAX_HEADER_BYTES:
                raise _err(stream.path, f"a {size}-byte {kind.decode()!r} header at byte {stream.pos - 512}, more "
                           f"than a name or pax record needs ({_LIMITS}.MAX_HEADER_BYTES); not a plausible tar")
            data = stream.read(padded)
            if len(data) < padded:
                raise ValueError("truncated archive")
            if kind == b"L":
                next_name = data[:size].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif kind == b"x":
                next_name = _pax_path(data[:size]) or next_name
            continue
        if kind == b"S":
            raise ValueError("sparse member")
        start = stream.pos
        if kind in (b"0", b"\0", b"7"):
            yield (next_name if next_name is not None else name), size
        next_name = None
        stream.skip(start + padded - stream.pos)


def tar_index(buf: bytes | memoryview) -> list[tuple[str, int, int]]:
    """``(name, start, end)`` of every regular file in an uncompressed tar held in ``buf``
    (:func:`_tar_walk`'s parse); raises ``ValueError`` where :func:`_tar_walk` does."""
    stream = _Capped(io.BytesIO(bytes(buf)), "<buffer>")
    return [(name, stream.pos, stream.pos + size) for name, size in _tar_walk(stream)]


def _image_member(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def _tarfile_walk(tf: tarfile.TarFile) -> Iterator[tuple[str, int, Callable[[int], bytes]]]:
    for m in tf:
        if m.isfile():
            f = tf.extractfile(m)
            yield m.name, m.size, (f.read if f is not None else (lambda n: b""))


def _collect(members: Iterator[tuple[str, int, Callable[[int], bytes]]], path: Path):
    """The bytes of the image members in one buffer, ``(name, start, end)`` of each in it, and
    the number of regular files seen; an image member over ``MAX_MEMBER_BYTES`` is refused
    before it is read."""
    buf, index, files = bytearray(), [], 0
    for name, size, read in members:
        files += 1
        name = name[2:] if name.startswith("./") else name
        if not _image_member(name):
            continue
        if size > MAX_MEMBER_BYTES:
            raise _err(path, f"member {name} is {gib(size)}, more than the {gib(MAX_MEMBER_BYTES)} an image may "
                       f"take ({_LIMITS}.MAX_MEMBER_BYTES)")
        data = read(size)
        if len(data) != size:
            raise EOFError(f"member {name} is truncated")
        index.append((name, len(buf), len(buf) + size))
        buf += data
    return buf, index, files


def _read_members(path: Path) -> tuple[bytearray, list[tuple[str, int, int]], int]:
    """:func:`_collect` over the archive: parsed directly, else (an unusual archive, or not a
    tar at all) by :mod:`tarfile`, whose error then says why it is not readable."""
    failures = (ValueError, OSError, EOFError, zlib.error, lzma.LZMAError)
    try:
        with _open(path) as f:
            stream = _Capped(f, path)
            return _collect(((n, size, stream.read) for n, size in _tar_walk(stream)), path)
    except failures:
        pass
    try:
        with _open(path) as f, tarfile.open(fileobj=_Capped(f, path), mode="r|") as tf:
            return _collect(_tarfile_walk(tf), path)
    except (tarfile.TarError, *failures) as e:
        raise _err(path, f"not a readable tar archive ({type(e).__name__}: {e})") from None


def read_archive(path: Path, size=None, channels=3, resample="bilinear", num_workers=None) -> dict[str, ImageSet]:
    """An image-folder layout straight from a tar archive, without extracting it.

    One streaming pass keeps the image members' bytes (:func:`_read_members`); forked decoding
    workers read the images out of that buffer (no copy through pipes).
    """
    buf, index, files = _read_members(path)
    if not index:
        what = "holds no files" if not files else f"holds {files} file(s) but no images"
        raise _err(path, f"the archive {what} ({', '.join(IMAGE_EXTENSIONS[:5])}, ...)")
    index.sort(key=lambda m: m[0])
    names = [n for n, _, _ in index]
    fork = _mp_context().get_start_method() == "fork"
    items = [(f"{path}:{n}", (a, b) if fork else bytes(buf[a:b])) for n, a, b in index]
    _SHARED[0] = buf
    try:
        images = decode_many(items, size, channels or 3, resample, num_workers, desc=f"decoding {path.name}")
    finally:
        _SHARED[0] = b""
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
