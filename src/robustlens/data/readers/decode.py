"""Decoding image files (paths or bytes) with PIL, in parallel worker processes.

Every reader of image files (folder, archive, Tiny ImageNet) and the streaming
:class:`~robustlens.data.loader.FileLoader` decode through :func:`decode_image`, so the same
file gives the same pixels everywhere.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from robustlens.data.readers.base import check_memory
from robustlens.data.readers.preprocess import CROP, apply_preprocessing
from robustlens.errors import UserError


def decode_image(source: Path | bytes, size: int | None, channels: int = 3, resample: str = "bilinear",
                 name: str | None = None, preprocessing: str = "squash") -> np.ndarray:
    """Decode one image file (path or its bytes) to uint8 (H, W, C), resized to ``size`` by
    ``preprocessing`` (:mod:`~robustlens.data.readers.preprocess`: ``"squash"`` both sides to
    ``size``; ``"res256crop224"`` RobustBench's shorter side to 256 and centre crop 224).

    Raises :class:`UserError` naming the file when it cannot be decoded.
    """
    from PIL import Image

    label = name or (os.fspath(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            mode = "L" if channels == 1 else "RGB"
            im = _to_8bit(im, label)
            if im.mode != mode:
                im = im.convert(mode)
            im = apply_preprocessing(im, preprocessing, size, _pil_resample(resample))
            arr = np.asarray(im, dtype=np.uint8)
    except UserError:
        raise
    except Exception as e:  # PIL raises many types for corrupt files
        raise UserError(f"{label}: cannot decode image ({type(e).__name__}: {e})") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def _to_8bit(im, label: str):
    """A 16-bit greyscale image (PNG, TIFF ``I;16*``; a PGM with maxval > 255, which PIL
    scales to 0..65535) as 8 bits by its high byte: what PIL itself does with 16-bit RGB, RGBA
    and grey+alpha PNGs, so a picture decodes alike whatever its channels. (PIL's own
    ``convert("L")`` clips these at 255: a solid white image.) A 32-bit integer or float image
    is kept when its values lie in 0..255 (as before) and refused otherwise: it has no defined
    8-bit scale."""
    from PIL import Image

    if im.mode.startswith("I;16") or (im.mode == "I" and im.format in ("PPM", "PNG")):
        a = np.asarray(im).astype(np.uint32)
        return Image.fromarray((np.clip(a, 0, 65535) >> 8).astype(np.uint8))  # 2-D uint8: mode L
    if im.mode in ("I", "F"):
        lo, hi = im.getextrema()
        if lo < 0 or hi > 255:
            raise UserError(
                f"{label}: a {'32-bit integer' if im.mode == 'I' else 'floating-point'} image with values "
                f"{lo:g}..{hi:g}, which have no defined 8-bit scale; save it with 8 or 16 bits per channel"
            )
    return im


def _pil_resample(resample: str):
    from PIL import Image

    return {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST}[resample]


def _decode_chunk(args) -> tuple[str, object]:
    """Worker: decode a list of (name, path-or-bytes); ('ok', array) or ('error', message)."""
    items, size, channels, resample, preprocessing = args
    out = []
    try:
        for name, src in items:
            if isinstance(src, tuple):  # (start, end) in the archive buffer inherited through fork
                src = bytes(_SHARED[0][src[0] : src[1]])
            out.append(decode_image(src if isinstance(src, bytes) else Path(src), size, channels, resample, name,
                                    preprocessing))
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
    preprocessing: str = "squash",
) -> torch.Tensor:
    """Decode many images with ``num_workers`` processes -> uint8 (N, C, H, W), in input order.

    ``items`` may be a generator (e.g. members streamed out of an archive): chunks are handed
    to the workers as soon as they are read, so reading and decoding overlap.
    """
    from concurrent.futures import Future

    from robustlens.progress import Progress

    workers = max(1, min(num_workers or os.cpu_count() or 1, 32))
    if total is None and isinstance(items, Sequence):
        total = len(items)
    if total is not None:
        check_memory(total, channels, size or (CROP if preprocessing == "res256crop224" else None), desc)
    per = 512 if total is None else max(16, min(1024, total // (workers * 8) + 1))
    bar = Progress(desc, total or 0, unit="img")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context()) if workers > 1 else None
    jobs: list[tuple[list, Future | tuple]] = []

    def submit(chunk: list) -> None:
        args = (chunk, size, channels, resample, preprocessing)
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
        side = size or (CROP if preprocessing == "res256crop224" else 1)
        return torch.zeros((0, channels, side, side), dtype=torch.uint8)
    arr = np.concatenate([r for _, r in results])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def _different_sizes(named_shapes) -> None:
    seen: dict = {}
    for name, shape in named_shapes:
        seen.setdefault(tuple(shape[:2]), name)
    (s1, n1), (s2, n2) = list(seen.items())[:2]
    raise UserError(
        f"images have different sizes ({n1} is {s1[1]}x{s1[0]}, {n2} is {s2[1]}x{s2[0]}); pass --size N to resize "
        "them (size = N in a study spec's [data], size=N in Python)"
    )


def decode_image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file without decoding its pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:
        raise UserError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
