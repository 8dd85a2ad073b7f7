"""Data: every source (procedural, folders, archives, CIFAR, MNIST, SVHN, STL-10, Tiny ImageNet)
is read into the same in-memory :class:`ImageSet` (uint8 NCHW + int64 labels + class names).

    from robustlens.data import load, load_splits
    train = load("trifeature", split="train", size=32)
    splits = load_splits("../shared/data/cifar10-jpeg.tar.gz")   # {"train": ..., "test": ...}
"""

from robustlens.data.base import ImageSet

__all__ = ["ImageSet", "load", "load_splits", "TensorLoader", "FileLoader", "sample_grid"]

_LAZY = {
    "load": "robustlens.data.source",
    "load_splits": "robustlens.data.source",
    "TensorLoader": "robustlens.data.loader",
    "FileLoader": "robustlens.data.loader",
    "sample_grid": "robustlens.data.grid",
}


def __getattr__(name: str):  # lazy, so that `import robustlens.data` stays cheap
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
