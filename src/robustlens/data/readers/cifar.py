"""``cifar``: CIFAR-10 (``data_batch_1..5``, ``test_batch``, ``batches.meta``) and CIFAR-100
(``train``, ``test``, ``meta``; option ``label="fine"|"coarse"``) python batches.

Security: CIFAR batches are pickles. They are read with an unpickler that refuses every
global except the three numpy functions needed to rebuild an array (``_reconstruct``,
``ndarray``, ``dtype``) and ``_codecs.encode`` (how Python 3 pickles ``bytes`` at protocol 2),
so a batch cannot run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from robustlens.data.base import ImageSet
from robustlens.data.readers.base import READERS, Detect, Reader, _convert_channels, _err, _imageset, resize_uint8
from robustlens.errors import UserError


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


def _is_cifar_folder(path: Path) -> bool:
    root = _cifar_root(path)
    return (root / "batches.meta").exists() or (root / "data_batch_1").exists() or (
        (root / "meta").is_file() and (root / "train").is_file()
    )


READERS.add("cifar", Reader(
    read_cifar, options=("label",),
    folder=Detect(_is_cifar_folder, rank=1),
    file=Detect(lambda name: name.startswith("data_batch") or name in ("test_batch", "batches.meta"), rank=4),
), "CIFAR-10 / CIFAR-100 python batches (restricted unpickling)")
