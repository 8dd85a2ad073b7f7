"""Writers of tiny fixtures in the exact on-disk formats the readers accept."""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def rng_images(n: int, h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    """uint8 (n, h, w, c) random images."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def write_cifar10(root: Path, n_per_batch: int = 6, n_batches: int = 5, seed: int = 0) -> dict:
    """Official CIFAR-10 python layout: data_batch_1..5, test_batch, batches.meta (pickle protocol 2,
    dict with 'batch_label', 'labels', 'data' (N x 3072 uint8: 1024 R, 1024 G, 1024 B), 'filenames')."""
    root.mkdir(parents=True, exist_ok=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    rng = np.random.default_rng(seed)
    out = {"train": ([], []), "test": ([], [])}
    files = [f"data_batch_{i}" for i in range(1, n_batches + 1)] + ["test_batch"]
    for f in files:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        batch = {"batch_label": f"training batch of {f}", "labels": labels, "data": data,
                 "filenames": [f"img_{i}.png" for i in range(n_per_batch)]}
        with open(root / f, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
        split = "test" if f == "test_batch" else "train"
        out[split][0].append(data.reshape(-1, 3, 32, 32))
        out[split][1].extend(labels)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names, "num_cases_per_batch": n_per_batch, "num_vis": 3072}, fh, protocol=2)
    return {s: (np.concatenate(x), np.array(y)) for s, (x, y) in out.items()} | {"classes": names}


def write_cifar100(root: Path, n: int = 8, seed: int = 0) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fine = [f"fine{i}" for i in range(100)]
    coarse = [f"coarse{i}" for i in range(20)]
    out = {}
    for split in ("train", "test"):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        f, c = rng.integers(0, 100, size=n).tolist(), rng.integers(0, 20, size=n).tolist()
        with open(root / split, "wb") as fh:
            pickle.dump({"filenames": [], "batch_label": split, "fine_labels": f, "coarse_labels": c, "data": data},
                        fh, protocol=2)
        out[split] = (data.reshape(-1, 3, 32, 32), np.array(f), np.array(c))
    with open(root / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": fine, "coarse_label_names": coarse}, fh, protocol=2)
    return out


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX: two zero bytes, type code (0x08 = ubyte), ndim, big-endian uint32 dims, data."""
    assert arr.dtype == np.uint8
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx(root: Path, n: int = 7, gz: bool = False, seed: int = 0) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, split in (("train", "train"), ("t10k", "test")):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        for kind, arr, dims in (("images", x, "idx3"), ("labels", y, "idx1")):
            name = f"{prefix}-{kind}-{dims}-ubyte"
            data = idx_bytes(arr)
            if gz:
                (root / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
        out[split] = (x, y)
    return out


def write_svhn(root: Path, n: int = 9, seed: int = 0) -> dict:
    import scipy.io

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split in ("train", "test"):
        X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)  # 10 means digit 0
        y[0, 0] = 10
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": X, "y": y})
        out[split] = (X, y)
    return out


def write_stl10(root: Path, n: int = 4, seed: int = 0) -> dict:
    """STL-10 binary: each image 3x96x96 in column-major order (so x, y swapped), labels 1..10."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split in ("train", "test"):
        imgs = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)  # (N, C, H, W)
        labels = rng.integers(1, 11, size=n).astype(np.uint8)
        # column-major per channel: write the transposed (W, H) planes in C order
        imgs.transpose(0, 1, 3, 2).tofile(root / f"{split}_X.bin")
        labels.tofile(root / f"{split}_y.bin")
        out[split] = (imgs, labels)
    (root / "class_names.txt").write_text("\n".join(
        ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]) + "\n")
    return out


def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr if arr.shape[2] == 3 else arr[:, :, 0]).save(path, format="PNG")


def write_tiny_imagenet(root: Path, wnids=("n01", "n02", "n03"), per_class: int = 2, n_val: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    train = []
    for k, w in enumerate(wnids):
        lines = []
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
            name = f"{w}_{i}.JPEG"
            d = root / "train" / w / "images"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(d / name, format="PNG")  # lossless bytes behind the .JPEG name
            box = [int(v) for v in rng.integers(0, 30, size=2)] + [int(v) for v in rng.integers(32, 64, size=2)]
            lines.append(f"{name}\t" + "\t".join(map(str, box)))
            train.append((arr, k, box))
        (root / "train" / w / f"{w}_boxes.txt").write_text("\n".join(lines) + "\n")
    val = []
    (root / "val" / "images").mkdir(parents=True, exist_ok=True)
    ann = []
    for i in range(n_val):
        arr = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        k = int(i % len(wnids))
        Image.fromarray(arr).save(root / "val" / "images" / f"val_{i}.JPEG", format="PNG")
        box = [1, 2, 40, 50]
        ann.append(f"val_{i}.JPEG\t{wnids[k]}\t" + "\t".join(map(str, box)))
        val.append((arr, k, box))
    (root / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    return {"train": train, "val": val}


def write_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 3, splits=None, size=(12, 10),
                       ext: str = "png", seed: int = 0) -> dict:
    """root/[split/]class/i.ext; returns {split: [(rel path, array, label)]} (sorted by path)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in splits or [None]:
        rows = []
        for k, c in enumerate(classes):
            for i in range(per_class):
                arr = rng.integers(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)
                rel = Path(*([split] if split else []), c, f"{i}.{ext}")
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(path, format={"png": "PNG", "jpg": "JPEG", "bmp": "BMP"}[ext])
                rows.append((rel.as_posix(), arr, k))
        out[split or "train"] = sorted(rows, key=lambda r: r[0])
    return out


def tar_folder(root: Path, archive: Path, arcname: str | None = None) -> Path:
    mode = "w:gz" if archive.name.endswith((".gz", ".tgz")) else "w"
    with tarfile.open(archive, mode) as tf:
        tf.add(root, arcname=arcname if arcname is not None else root.name)
    return archive


def png16_bytes(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA by the last axis of uint16 (h, w, c)),
    written chunk by chunk after the PNG specification (PIL writes only 16-bit grey)."""
    import struct
    import zlib

    h, w, c = arr.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def add_tar_member(archive: Path, name: str, data: bytes | None = None, size: int = 0) -> Path:
    """Append a member ``name`` to a ``.tar.gz`` (``data``, or ``size`` zero bytes streamed)."""
    import io

    with tarfile.open(archive, "r:gz") as tf:
        old = [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]
    with tarfile.open(archive, "w:gz", compresslevel=1) as tf:
        for m, content in old:
            tf.addfile(m, io.BytesIO(content) if content is not None else None)
        info = tarfile.TarInfo(name)
        info.size = len(data) if data is not None else size
        tf.addfile(info, io.BytesIO(data) if data is not None else _Zeros(size))
    return archive


class _Zeros:
    def __init__(self, n: int) -> None:
        self.n = n

    def read(self, k: int = -1) -> bytes:
        k = self.n if k < 0 else min(k, self.n)
        self.n -= k
        return bytes(k)
