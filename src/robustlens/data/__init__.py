"""Data: every source (procedural, folders, archives, CIFAR, MNIST, SVHN, STL-10, Tiny ImageNet)
is read into the same in-memory :class:`ImageSet` (uint8 NCHW + int64 labels + class names).

    from robustlens.data import load, load_splits
    train = load("trifeature", split="train", size=32)
    splits = load_splits("../shared/data/cifar10-jpeg.tar.gz")   # {"train": ..., "test": ...}
"""

from robustlens.data.base import ImageSet

__all__ = ["ImageSet", "load", "load_splits"]


def __getattr__(name: str):  # lazy, so that `import robustlens.data` stays cheap
    if name in ("load", "load_splits"):
        from robustlens.data import source

        return getattr(source, name)
    raise AttributeError(name)
