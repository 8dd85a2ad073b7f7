"""Readers of on-disk image-classification formats, one module per format.

=================  ==========================================================================
``folder``         :mod:`~robustlens.data.readers.folder`: ``root/[<split>/]<class>/<image>``
``archive``        :mod:`~robustlens.data.readers.archive`: the same layout inside a tar
``cifar``          :mod:`~robustlens.data.readers.cifar`: CIFAR-10 / CIFAR-100 python batches
``idx``            :mod:`~robustlens.data.readers.idx`: MNIST / Fashion-MNIST
``svhn``           :mod:`~robustlens.data.readers.svhn`: SVHN ``*_32x32.mat``
``stl10``          :mod:`~robustlens.data.readers.stl10`: STL-10 binaries
``tinyimagenet``   :mod:`~robustlens.data.readers.tinyimagenet`: Tiny ImageNet 200 (with boxes)
``imagenet``       :mod:`~robustlens.data.readers.imagenet`: ``root/[<split>/]<wnid>/<image>``, 1000 classes
=================  ==========================================================================

Each module registers a :class:`~robustlens.data.readers.base.Reader` in :data:`READERS`
(names: :data:`robustlens.names.FORMATS`); :func:`robustlens.data.formats.read_splits` reads
every format through it.
"""

# in the order of robustlens.names.FORMATS, which is the registration order
from robustlens.data.readers import folder, archive, cifar, idx, svhn, stl10, tinyimagenet, imagenet  # noqa: F401,I001 (registers)
from robustlens.data.readers.base import READERS, Detect, Reader

__all__ = ["READERS", "Reader", "Detect"]
