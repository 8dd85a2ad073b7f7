"""The ImageNet-1k class list and the 16-category aggregation of Geirhos et al. (2019), as data.

* :func:`imagenet_classes`: the 1000 ``(wnid, name)`` pairs in the standard class-index order
  (``imagenet_classes.tsv``, from the Keras / PyTorch ``imagenet_class_index.json``; the source
  is cited in the file). A model trained on ImageNet-1k predicts index ``i`` = line ``i``.
* :func:`imagenet16_categories`: the 16 entry-level categories (airplane ... truck) and the
  ImageNet indices each aggregates (``imagenet16.tsv``: the ``<category>_indices`` lists of
  model-vs-human's ``helper/human_categories.py``, cited in the file). model-vs-human's
  ``ImageNetProbabilitiesTo16ClassesMapping`` gives a category the mean softmax probability
  of its members; :mod:`robustlens.probes.stimuli` does the same.

Torch-free, so the spec checker and the CLI can read them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

_HERE = Path(__file__).parent


def _rows(name: str) -> list[list[str]]:
    text = (_HERE / name).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]


@lru_cache(maxsize=None)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """The 1000 ImageNet-1k classes as ``(wnid, name)``, index order."""
    return tuple((w, n) for w, n in _rows("imagenet_classes.tsv"))


def imagenet_wnids() -> list[str]:
    """The 1000 WordNet ids, index order (``n01440764`` = 0, tench)."""
    return [w for w, _ in imagenet_classes()]


def imagenet_names() -> list[str]:
    """The 1000 human-readable names, index order (some repeat: two 'crane', two 'maillot')."""
    return [n for _, n in imagenet_classes()]


@lru_cache(maxsize=None)
def imagenet16_categories() -> dict[str, tuple[int, ...]]:
    """``{category: ImageNet indices}`` for the 16 categories of Geirhos et al. (2019), sorted
    by name (model-vs-human's ``get_human_object_recognition_categories()`` order)."""
    return {c: tuple(int(i) for i in idx.split(",")) for c, idx in _rows("imagenet16.tsv")}
