"""Model registry: ``create(name, num_classes, ...)`` builds any robustlens model.

Families register themselves with :func:`register`; ``available()`` lists them. Default
normalisation statistics belong to each entry (ImageNet statistics for ImageNet stems,
CIFAR-10 statistics for CIFAR models) and can be overridden with ``mean`` / ``std``.
"""

from __future__ import annotations

import difflib
from typing import Callable

from robustlens.errors import UserError
from robustlens.models.base import ImageClassifier

_REGISTRY: dict[str, Callable[..., ImageClassifier]] = {}
_INFO: dict[str, str] = {}


def register(name: str, info: str = "") -> Callable:
    """Decorator: register a factory ``f(num_classes, **kwargs) -> ImageClassifier``."""

    def deco(factory: Callable[..., ImageClassifier]) -> Callable[..., ImageClassifier]:
        _REGISTRY[name] = factory
        _INFO[name] = info or (factory.__doc__ or "").strip().split("\n")[0]
        return factory

    return deco


def available() -> dict[str, str]:
    """Registered architecture names with a one-line description."""
    _load_families()
    return dict(sorted(_INFO.items()))


def create(name: str, num_classes: int = 10, **kwargs) -> ImageClassifier:
    """Build architecture ``name`` for ``num_classes`` classes (extra kwargs go to the family)."""
    _load_families()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"--arch: unknown architecture {name!r}{hint}; available: {', '.join(sorted(_REGISTRY))}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes: expected a positive integer, got {num_classes!r}")
    model = _REGISTRY[name](num_classes=num_classes, **kwargs)
    model.arch = name
    return model


_loaded = False


def _load_families() -> None:
    """Import every family module once so that their ``@register`` calls run."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for mod in ("small_cnn", "preact_resnet", "resnet", "alexnet", "wide_resnet"):
        try:
            importlib.import_module(f"robustlens.models.{mod}")
        except ModuleNotFoundError as e:  # a family not written yet must not break the others
            if e.name != f"robustlens.models.{mod}":
                raise


@register("small_cnn", "4-layer CNN (conv-BN-ReLU x4, GAP, linear) for CPU work; any input size")
def _small_cnn(num_classes: int = 10, **kw) -> ImageClassifier:
    from robustlens.models.small_cnn import SmallCNN

    return SmallCNN(num_classes=num_classes, **kw)
