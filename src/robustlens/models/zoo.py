"""Model registry: ``create(name, num_classes, ...)`` builds any robustlens model.

Every family registers a factory here with a one-line description; ``available()`` lists
them. Default normalisation statistics belong to each entry (ImageNet statistics for
ImageNet stems, CIFAR-10 statistics for CIFAR models) and can be overridden with ``mean`` /
``std``. ``create`` records the arguments it was given in ``model.config`` so that a
checkpoint can rebuild the same model (:mod:`robustlens.models.checkpoint`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable

from robustlens.errors import UserError
from robustlens.models.base import ImageClassifier
from robustlens.registry import Registry


@dataclass(frozen=True)
class Arch:
    """A registered architecture: ``factory(num_classes, **kwargs)`` and its canonical class count."""

    factory: Callable[..., ImageClassifier]
    num_classes: int = 10  # 1000 for ImageNet stems, 10 for CIFAR models


ARCHS: Registry[Arch] = Registry("architecture", key="--arch")


def register(name: str, info: str = "", *, num_classes: int = 10) -> Callable:
    """Decorator: register a factory ``f(num_classes, **kwargs) -> ImageClassifier``."""

    def deco(factory: Callable[..., ImageClassifier]) -> Callable[..., ImageClassifier]:
        ARCHS.add(name, Arch(factory, num_classes), info or (factory.__doc__ or "").strip().split("\n")[0])
        return factory

    return deco


def available() -> dict[str, str]:
    """Registered architecture names with a one-line description."""
    return dict(sorted(ARCHS.info().items()))


def _arch(name: str) -> Arch:
    """The architecture ``name``; an unknown name is the ``--arch`` error with a close match."""
    if name not in ARCHS:
        # the zoo's own wording (sorted, "available"), which `robustlens train --arch` prints
        close = difflib.get_close_matches(name, ARCHS.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"--arch: unknown architecture {name!r}{hint}; available: {', '.join(sorted(ARCHS))}")
    return ARCHS.get(name)


def default_num_classes(name: str) -> int:
    """The family's canonical number of classes (1000 for ImageNet stems, 10 for CIFAR models)."""
    return _arch(name).num_classes


def _plain(value: Any) -> Any:
    """Tuples -> lists (recursively), so ``model.config`` is JSON-ready and compares equal after a round trip."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def create(name: str, num_classes: int = 10, **kwargs: Any) -> ImageClassifier:
    """Build architecture ``name`` for ``num_classes`` classes (extra kwargs go to the family).

    The returned model has ``model.arch == name`` and ``model.config == {"num_classes": ...,
    **kwargs}`` (the exact recipe :func:`robustlens.models.checkpoint.load_checkpoint` uses).
    """
    arch = _arch(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes: expected a positive integer, got {num_classes!r}")
    try:
        model = arch.factory(num_classes=num_classes, **kwargs)
    except TypeError as e:
        m = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if m is None:
            raise
        raise UserError(f"{name}: unknown model option {m.group(1)!r}") from None
    model.arch = name
    model.config = {"num_classes": num_classes, **_plain(kwargs)}
    return model


# --- the zoo -------------------------------------------------------------------------------


@register("small_cnn", "4-layer CNN (conv-BN-ReLU x4, GAP, linear) for CPU work; any input size")
def _small_cnn(num_classes: int = 10, **kw: Any) -> ImageClassifier:
    from robustlens.models.small_cnn import SmallCNN

    return SmallCNN(num_classes=num_classes, **kw)


@register("preact_resnet18", "PreActResNet-18, 3x3 stem for 32x32 (Wong et al. 2020 fast_adversarial); CIFAR-10 norm")
def _preact_resnet18(num_classes: int = 10, **kw: Any) -> ImageClassifier:
    from robustlens.models.preact_resnet import PreActResNet

    return PreActResNet(num_classes=num_classes, num_blocks=(2, 2, 2, 2), **kw)


@register("resnet18", "ResNet-18, ImageNet stem, torchvision keys (weights load); ImageNet norm", num_classes=1000)
def _resnet18(num_classes: int = 1000, **kw: Any) -> ImageClassifier:
    from robustlens.models.resnet import resnet18

    return resnet18(num_classes=num_classes, **kw)


@register("resnet50", "ResNet-50 (v1.5 bottleneck), ImageNet stem, torchvision keys; ImageNet norm", num_classes=1000)
def _resnet50(num_classes: int = 1000, **kw: Any) -> ImageClassifier:
    from robustlens.models.resnet import resnet50

    return resnet50(num_classes=num_classes, **kw)


@register("resnet101", "ResNet-101 (v1.5 bottleneck), ImageNet stem, torchvision keys; ImageNet norm", num_classes=1000)
def _resnet101(num_classes: int = 1000, **kw: Any) -> ImageClassifier:
    from robustlens.models.resnet import resnet101

    return resnet101(num_classes=num_classes, **kw)


@register("alexnet", "AlexNet (one-weird-trick variant), exactly torchvision's keys; ImageNet norm", num_classes=1000)
def _alexnet(num_classes: int = 1000, **kw: Any) -> ImageClassifier:
    from robustlens.models.alexnet import AlexNet

    return AlexNet(num_classes=num_classes, batch_norm=False, **kw)


@register("alexnet_bn", "AlexNet + BN after each conv (Itazuri et al.); torchvision keys + features.bnN.*", num_classes=1000)
def _alexnet_bn(num_classes: int = 1000, **kw: Any) -> ImageClassifier:
    from robustlens.models.alexnet import AlexNet

    return AlexNet(num_classes=num_classes, batch_norm=True, **kw)


def _wide_resnet(depth: int, widen_factor: int) -> Callable[..., ImageClassifier]:
    """The factory of WideResNet-``depth``-``widen_factor`` (both overridable as options)."""

    def factory(num_classes: int = 10, **kw: Any) -> ImageClassifier:
        from robustlens.models.wide_resnet import WideResNet

        kw.setdefault("depth", depth)
        kw.setdefault("widen_factor", widen_factor)
        return WideResNet(num_classes=num_classes, **kw)

    return factory


for _name, _depth, _widen, _info in (
    ("wrn28_10", 28, 10, "WideResNet-28-10 (depth/widen_factor options), RobustBench/TRADES keys; CIFAR-10 norm"),
    ("wrn16_4", 16, 4, "WideResNet-16-4 (small WRN for tests and CPU runs), RobustBench keys; CIFAR-10 norm"),
    ("wrn34_10", 34, 10, "WideResNet-34-10 (TRADES, Zhang et al. 2019), RobustBench keys; CIFAR-10 norm"),
    ("wrn70_16", 70, 16, "WideResNet-70-16 (267 M params), RobustBench keys; CIFAR-10 norm"),
):
    register(_name, _info)(_wide_resnet(_depth, _widen))


@register("cifar_resnet50", "ResNet-50, CIFAR 3x3 stem, RobustBench / robustness-library keys (shortcut, linear)")
def _cifar_resnet50(num_classes: int = 10, **kw: Any) -> ImageClassifier:
    from robustlens.models.cifar_resnet import CifarResNet

    return CifarResNet(num_classes=num_classes, **kw)
