"""A catalogue of published models: name a weight file you already have by its entry.

Names follow RobustBench's ``<data set>/<threat>/<Name><Year><Word>`` convention (Croce et al.
2021, *RobustBench*; ``robustbench/model_zoo/``), torchvision's models sit under threat
``none``. Each :class:`Entry` states the architecture and the exact state-dict layout of the
published file, the classes, the input normalisation, the input size and preprocessing
(:data:`robustlens.names.PREPROCESSING`), the threat it was trained for, and the numbers its
authors (or RobustBench) report, each with its source. Nothing is downloaded: the user
brings the file.

:func:`import_published` reads a file through ``torch.load(weights_only=True)`` (or
safetensors), strips the entry's documented prefixes, and checks every key and shape
against the entry's architecture (built on the ``meta`` device). A file that does not fit is
a one-line :class:`~robustlens.errors.UserError` with the missing / unexpected keys, the shape
mismatches and the closest entries by key overlap. ``NAME@PATH`` (a study spec's
``checkpoint``, any ``--checkpoint``) is read by :func:`load_ref`.

The layouts (keys after ``torch.load``):

* ``torchvision``: bare keys (``conv1.weight``, ``layer1.0.bn1.running_mean``, ``fc.weight``);
  a DataParallel ``module.`` prefix is stripped.
* ``robustbench``: the ``.pt`` files RobustBench's ``load_model`` reads: the state dict, or one
  under ``"state_dict"``, keys possibly prefixed ``module.`` and / or ``model.`` (both stripped,
  as ``robustbench/utils.py`` does). The normalisation is *not* in the file (``mu`` / ``sigma``
  are buffers of RobustBench's wrapper classes; if present they are checked and dropped).
* ``madrylab``: the robustness library's checkpoints ``{"model": sd, "optimizer", "schedule",
  "epoch"}`` with ``sd`` keys ``module.model.*`` (the classifier, kept), ``module.attacker.model.*``
  (the same weights again, dropped), ``module.normalizer.new_mean`` / ``new_std`` and
  ``module.attacker.normalize.*`` (the normalisation, checked against the entry and dropped).
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from robustlens.errors import UserError
from robustlens.models.base import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from robustlens.models.cifar_resnet import ROBUSTNESS_CIFAR_MEAN, ROBUSTNESS_CIFAR_STD
from robustlens.names import PREPROCESSING

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RAW_MEAN, RAW_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # RobustBench models without a normaliser take [0, 1]
LAYOUTS = ("torchvision", "robustbench", "madrylab")
_MAX_LISTED = 4
_STATS_TOL = 1e-4

RB = "RobustBench leaderboard (robustbench/model_info/{}.json)"
MADRY = "MadryLab robustness README, pretrained models table (PGD-20 / PGD-100, step 2.5 eps / steps)"
TV = "torchvision model docs ({} IMAGENET1K_V1 acc@1)"


@dataclass(frozen=True)
class Reported:
    """One published accuracy (percent): ``clean`` or robust under ``attack`` at ``eps``."""

    metric: str  # "clean" | "robust"
    accuracy: float
    source: str
    attack: str = ""
    eps: str = ""


@dataclass(frozen=True)
class Entry:
    """A published model: what the file holds and how the model must be fed."""

    name: str
    paper: str
    arch: str
    layouts: tuple[str, ...]
    classes: str  # "cifar10" (names stored) | "imagenet" (1000 outputs, WordNet order)
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    normalisation: str  # where the published model normalises (our model does it in Normalize)
    input_size: int
    preprocessing: str
    threat: str  # "Linf" | "L2" | "none"
    eps: str
    training: str
    reported: tuple[Reported, ...]
    arch_options: tuple[tuple[str, Any], ...] = ()
    unused_prefixes: tuple[str, ...] = ()  # keys in the file that the forward pass never uses
    files: str = ""  # the file name(s) the authors publish

    @property
    def dataset(self) -> str:
        return self.name.split("/")[0]

    def class_names(self) -> list[str] | None:
        return list(CIFAR10_CLASSES) if self.classes == "cifar10" else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["arch_options"] = dict(self.arch_options)
        return d


_CIFAR = dict(classes="cifar10", num_classes=10, input_size=32, preprocessing="squash")
_IMAGENET = dict(classes="imagenet", num_classes=1000, input_size=224, preprocessing="res256crop224",
                 mean=IMAGENET_MEAN, std=IMAGENET_STD)
_MADRY_NORM = "robustness library: AttackerModel.normalizer (module.normalizer.new_mean / new_std, in the file)"

_ENTRIES = (
    Entry(name="cifar10/Linf/Standard", paper="RobustBench's standardly trained model (Croce et al. 2021)",
          arch="wrn28_10", layouts=("robustbench",), **_CIFAR, mean=RAW_MEAN, std=RAW_STD,
          normalisation="none: raw [0, 1] input", threat="none", eps="", training="standard (no adversary)",
          reported=(Reported("clean", 94.78, RB.format("cifar10/Linf/Standard")),
                    Reported("robust", 0.0, RB.format("cifar10/Linf/Standard"), "AutoAttack (standard)", "8/255"))),
    Entry(name="cifar10/Linf/Wong2020Fast", paper="Wong, Rice & Kolter 2020, Fast is better than free (ICLR)",
          arch="preact_resnet18", layouts=("robustbench",), **_CIFAR, mean=CIFAR10_MEAN, std=CIFAR10_STD,
          normalisation="RobustBench Wong2020FastNet mu / sigma buffers, not in the file",
          threat="Linf", eps="8/255", training="FGSM with random start (FGSM-RS), cyclic lr",
          arch_options=(("final_bn", False), ("shortcut_from", "input")),
          reported=(Reported("clean", 83.34, RB.format("cifar10/Linf/Wong2020Fast")),
                    Reported("robust", 43.21, RB.format("cifar10/Linf/Wong2020Fast"), "AutoAttack (standard)", "8/255"),
                    Reported("robust", 46.06, "Wong et al. 2020, as RobustBench quotes it ('reported')", "PGD (authors' evaluation)", "8/255"))),
    Entry(name="cifar10/Linf/Engstrom2019Robustness", paper="Engstrom et al. 2019, Robustness (Python library), MadryLab",
          arch="cifar_resnet50", layouts=("robustbench", "madrylab"), **_CIFAR, mean=ROBUSTNESS_CIFAR_MEAN,
          std=ROBUSTNESS_CIFAR_STD, normalisation="RobustBench mu / sigma (not in its file); " + _MADRY_NORM,
          threat="Linf", eps="8/255", training="PGD adversarial training", files="cifar_linf_8.pt (MadryLab)",
          reported=(Reported("clean", 87.03, RB.format("cifar10/Linf/Engstrom2019Robustness")),
                    Reported("robust", 49.25, RB.format("cifar10/Linf/Engstrom2019Robustness"), "AutoAttack (standard)", "8/255"),
                    Reported("robust", 53.29, MADRY, "PGD-100", "8/255"))),
    Entry(name="cifar10/Linf/Zhang2019Theoretically", paper="Zhang et al. 2019, Theoretically principled trade-off (TRADES, ICML)",
          arch="wrn34_10", layouts=("robustbench",), **_CIFAR, mean=RAW_MEAN, std=RAW_STD,
          normalisation="none: raw [0, 1] input", threat="Linf", eps="0.031", training="TRADES",
          unused_prefixes=("sub_block1.",),
          reported=(Reported("clean", 84.92, RB.format("cifar10/Linf/Zhang2019Theoretically")),
                    Reported("robust", 53.08, RB.format("cifar10/Linf/Zhang2019Theoretically"), "AutoAttack (standard)", "0.031"),
                    Reported("robust", 56.43, "Zhang et al. 2019, as RobustBench quotes it ('reported')", "authors' evaluation", "0.031"))),
    Entry(name="cifar10/Linf/Jia2022LAS-AT_70_16", paper="Jia et al. 2022, LAS-AT: adversarial training with learnable attack strategy",
          arch="wrn70_16", layouts=("robustbench",), **_CIFAR, mean=RAW_MEAN, std=RAW_STD,
          normalisation="none: raw [0, 1] input", threat="Linf", eps="8/255", training="LAS-AT",
          reported=(Reported("clean", 85.66, RB.format("cifar10/Linf/Jia2022LAS-AT_70_16")),
                    Reported("robust", 57.61, RB.format("cifar10/Linf/Jia2022LAS-AT_70_16"), "AutoAttack (standard)", "8/255"))),
    Entry(name="imagenet/none/resnet50", paper="He et al. 2016, torchvision ResNet-50 IMAGENET1K_V1",
          arch="resnet50", layouts=("torchvision",), **_IMAGENET, normalisation="none in the file (torchvision transforms)",
          threat="none", eps="", training="standard (no adversary)", files="resnet50-0676ba61.pth (torchvision)",
          reported=(Reported("clean", 76.13, TV.format("ResNet50_Weights")),
                    Reported("clean", 76.52, RB.format("imagenet/Linf/Standard_R50") + ", 5,000 images, same weights"),
                    Reported("robust", 0.0, RB.format("imagenet/Linf/Standard_R50"), "AutoAttack (standard)", "4/255"))),
    Entry(name="imagenet/none/alexnet", paper="Krizhevsky 2014 (one weird trick), torchvision AlexNet IMAGENET1K_V1",
          arch="alexnet", layouts=("torchvision",), **_IMAGENET, normalisation="none in the file (torchvision transforms)",
          threat="none", eps="", training="standard (no adversary)", files="alexnet-owt-7be5be79.pth (torchvision)",
          reported=(Reported("clean", 56.522, TV.format("AlexNet_Weights")),)),
    Entry(name="imagenet/Linf/Engstrom2019Robustness", paper="Engstrom et al. 2019, Robustness (Python library), MadryLab",
          arch="resnet50", layouts=("madrylab", "robustbench"), **_IMAGENET, normalisation=_MADRY_NORM,
          threat="Linf", eps="4/255", training="PGD adversarial training", files="imagenet_linf_4.pt (MadryLab)",
          reported=(Reported("clean", 62.42, MADRY), Reported("robust", 33.38, MADRY, "PGD-100", "4/255"),
                    Reported("clean", 62.56, RB.format("imagenet/Linf/Engstrom2019Robustness") + ", 5,000 images"),
                    Reported("robust", 29.22, RB.format("imagenet/Linf/Engstrom2019Robustness"), "AutoAttack (standard)", "4/255"))),
    Entry(name="imagenet/Linf/Engstrom2019Robustness_8_255", paper="Engstrom et al. 2019, Robustness (Python library), MadryLab",
          arch="resnet50", layouts=("madrylab",), **_IMAGENET, normalisation=_MADRY_NORM,
          threat="Linf", eps="8/255", training="PGD adversarial training", files="imagenet_linf_8.pt (MadryLab)",
          reported=(Reported("clean", 47.91, MADRY), Reported("robust", 19.52, MADRY, "PGD-100", "8/255"),
                    Reported("robust", 33.03, MADRY, "PGD-100", "4/255"))),
    Entry(name="imagenet/L2/Engstrom2019Robustness", paper="Engstrom et al. 2019, Robustness (Python library), MadryLab",
          arch="resnet50", layouts=("madrylab",), **_IMAGENET, normalisation=_MADRY_NORM,
          threat="L2", eps="3.0", training="PGD adversarial training", files="imagenet_l2_3_0.pt (MadryLab)",
          reported=(Reported("clean", 57.90, MADRY), Reported("robust", 35.09, MADRY, "PGD-100", "3.0"))),
    Entry(name="imagenet/Linf/Salman2020Do_R50", paper="Salman et al. 2020, Do adversarially robust ImageNet models transfer better? (NeurIPS)",
          arch="resnet50", layouts=("madrylab", "robustbench"), **_IMAGENET, normalisation=_MADRY_NORM,
          threat="Linf", eps="4/255", training="PGD adversarial training (robustness library)",
          reported=(Reported("clean", 64.02, RB.format("imagenet/Linf/Salman2020Do_R50") + ", 5,000 images"),
                    Reported("robust", 34.96, RB.format("imagenet/Linf/Salman2020Do_R50"), "AutoAttack (standard)", "4/255"))),
)

CATALOGUE: dict[str, Entry] = {e.name: e for e in _ENTRIES}


def entry(name: str, *, key: str = "--import") -> Entry:
    """The entry ``name``; an unknown name is one line with a close match and the list."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    close = difflib.get_close_matches(name, list(CATALOGUE), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"{key}: unknown catalogue entry {name!r}{hint}; entries: {', '.join(CATALOGUE)} (robustlens models --catalogue)")


def split_ref(value: str, *, key: str = "checkpoint") -> tuple[Entry, Path] | None:
    """``NAME@PATH`` -> (entry, path); None when ``value`` names no entry (a plain path)."""
    name, sep, path = str(value).partition("@")
    if not sep or (name not in CATALOGUE and "/" not in name):
        return None
    if not path:
        raise UserError(f"{key}: {value!r} names no file after '@' (expected NAME@PATH)")
    return entry(name, key=key), Path(path)


# --- key tables and layouts ----------------------------------------------------------------


def build(e: Entry, *, in_channels: int = 3) -> ImageClassifier:
    """The entry's architecture with its normalisation (random weights)."""
    from robustlens.models.zoo import create

    kw: dict[str, Any] = {**dict(e.arch_options), "mean": list(e.mean), "std": list(e.std)}
    if in_channels != 3:
        kw["in_channels"] = in_channels
    return create(e.arch, e.num_classes, **kw)


@functools.lru_cache(maxsize=None)
def key_table(e: Entry) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the entry's architecture and its shape (built on ``meta``; cached,
    do not modify)."""
    with torch.device("meta"):
        model = build(e)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _strip_all(sd: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items()} if sd and all(k.startswith(prefix) for k in sd) else sd


def _madrylab(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], tuple | None, list[str]] | None:
    """The classifier of a robustness-library state dict, its normaliser's statistics, the dropped keys."""
    sd = _strip_all(sd, "module.")
    if not any(k.startswith("model.") for k in sd) or not any(k.startswith(("attacker.", "normalizer.")) for k in sd):
        return None
    model = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    stats = (sd["normalizer.new_mean"], sd["normalizer.new_std"]) if "normalizer.new_mean" in sd and "normalizer.new_std" in sd else None
    return model, stats, [k for k in sd if not k.startswith("model.")]


def apply_layout(sd: dict[str, Tensor], e: Entry, layout: str) -> tuple[dict[str, Tensor], tuple | None, list[str]] | None:
    """Strip ``layout``'s documented prefixes: (state dict, normalisation in the file, dropped keys);
    None when the file is not in that layout."""
    if layout == "madrylab":
        out = _madrylab(sd)
        if out is None:
            return None
        model, stats, dropped = out
    else:
        model = _strip_all(sd, "module.")
        if layout == "robustbench":
            model = _strip_all(model, "model.")
        stats = (model.pop("mu"), model.pop("sigma")) if layout == "robustbench" and "mu" in model and "sigma" in model else None
        dropped = ["mu", "sigma"] if stats is not None else []
    unused = [k for k in model if k.startswith(e.unused_prefixes)] if e.unused_prefixes else []
    return {k: v for k, v in model.items() if k not in unused}, stats, dropped + unused


def _fill_num_batches_tracked(table: dict[str, tuple], sd: dict[str, Tensor]) -> None:
    """Weights saved before PyTorch 0.4.1 have no ``num_batches_tracked``: zeros, as torch does."""
    for k in table:
        if k.endswith(".num_batches_tracked") and k not in sd and k[: -len("num_batches_tracked")] + "running_mean" in sd:
            sd[k] = torch.zeros((), dtype=torch.long)


@dataclass
class KeyDiff:
    """Keys of a file against a table: missing, unexpected, shape mismatches; ``overlap`` in [0, 1]."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)
    overlap: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shapes)

    def describe(self) -> str:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:_MAX_LISTED]) + (", ..." if len(keys) > _MAX_LISTED else "")

        parts = [f"{len(v)} {what} ({some(v)})" for what, v in
                 (("missing keys", self.missing), ("unexpected keys", self.unexpected), ("shape mismatches", self.shapes)) if v]
        return "; ".join(parts)


def diff_keys(table: dict[str, tuple[int, ...]], sd: dict[str, Tensor]) -> KeyDiff:
    """Compare a state dict with a key table (names and shapes)."""
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs entry {s}" for k, s in table.items() if k in sd and tuple(sd[k].shape) != s]
    same = sum(1 for k, s in table.items() if k in sd and tuple(sd[k].shape) == s)
    return KeyDiff(missing=[k for k in table if k not in sd], unexpected=[k for k in sd if k not in table],
                   shapes=shapes, overlap=same / max(len(table), len(sd), 1))


def fit(e: Entry, raw: dict[str, Tensor]) -> tuple[dict[str, Tensor], tuple | None, list[str], str, KeyDiff]:
    """The entry's layout that fits ``raw`` best: (state dict, file normalisation, dropped, layout, diff)."""
    table = key_table(e)
    best = None
    for layout in e.layouts:
        out = apply_layout(raw, e, layout)
        if out is None:
            continue
        sd, stats, dropped = out
        _fill_num_batches_tracked(table, sd)
        d = diff_keys(table, sd)
        if best is None or d.overlap > best[4].overlap or d.ok:
            best = (sd, stats, dropped, layout, d)
        if d.ok:
            break
    if best is None:
        d = diff_keys(table, raw)
        return raw, None, [], e.layouts[0], d
    return best


def closest(raw: dict[str, Tensor], n: int = 3) -> list[tuple[str, float]]:
    """The ``n`` entries whose layouts share the most keys (and shapes) with ``raw``."""
    scores = [(name, fit(e, raw)[4].overlap) for name, e in CATALOGUE.items()]
    return sorted(scores, key=lambda t: -t[1])[:n]


# --- importing -----------------------------------------------------------------------------


def read_raw(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weight file (``torch.load(weights_only=True)`` or safetensors), unwrapped
    from a ``"model"`` / ``"state_dict"`` container, prefixes untouched."""
    from robustlens.models.checkpoint import _find_state_dict, _is_safetensors, _read_safetensors, _torch_load_safely

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found" if not path.exists() else f"{path}: is a folder; expected a weights file")
    obj: Any = _read_safetensors(path)[0] if _is_safetensors(path) else _torch_load_safely(path)
    return _find_state_dict(obj, path)


def _check_file_stats(e: Entry, stats: tuple | None, path: Path) -> None:
    """A normaliser stored in the file must agree with the entry's statistics."""
    if stats is None:
        return
    mean, std = ([float(v) for v in t.detach().float().flatten().tolist()] for t in stats)
    if len(mean) != len(e.mean) or any(abs(a - b) > _STATS_TOL for a, b in zip(mean + std, e.mean + e.std)):
        raise UserError(f"{path}: the file's normalisation (mean {[round(v, 4) for v in mean]}, std {[round(v, 4) for v in std]}) "
                        f"is not {e.name}'s (mean {list(e.mean)}, std {list(e.std)}); is this the right entry?")


def import_published(name: str, path: str | Path, device: str | torch.device = "cpu", *, key: str = "--import") -> ImageClassifier:
    """Build entry ``name``'s architecture and load the published file ``path`` into it.

    The keys must match the entry exactly once its documented prefixes are stripped (see the
    module docstring); otherwise a one-line error lists the missing and unexpected keys, the
    shape mismatches and the closest catalogue entries. ``model.catalogue`` is the entry,
    ``model.import_info`` the layout found and the keys dropped. Eval mode on ``device``.
    """
    e = entry(name, key=key)
    path = Path(path)
    raw = read_raw(path)
    sd, stats, dropped, layout, d = fit(e, raw)
    if not d.ok:
        near = ", ".join(f"{n} ({s:.0%} of keys)" for n, s in closest(raw))
        raise UserError(f"{path}: not the weights of {e.name} ({e.arch}, {'/'.join(e.layouts)} layout): {d.describe()}; closest entries: {near}")
    _check_file_stats(e, stats, path)
    model = build(e)
    model.load_state_dict(sd, strict=True)
    model.classes = e.class_names()
    model.catalogue = e
    model.import_info = {"style": layout, "source": str(path), "dropped_keys_count": len(dropped), "dropped_keys": dropped[:20],
                         "normalize_from": f"catalogue entry {e.name}"}
    return model.to(torch.device(device)).eval()


def sidecar_meta(e: Entry, path: str | Path, info: dict) -> dict:
    """What a checkpoint converted from entry ``e`` records about it (next to the usual sidecar)."""
    return {"catalogue": e.to_dict(), "preprocessing": e.preprocessing, "input_size": e.input_size,
            "threat": {"norm": e.threat, "eps": e.eps}, "classes": e.class_names(),
            "imported_from": str(path), "import": info}


def load_ref(value: str, device: str | torch.device = "cpu", *, key: str = "checkpoint") -> tuple[ImageClassifier, dict]:
    """``NAME@PATH`` -> ``(model, sidecar)``: :func:`import_published` plus the sidecar fields a
    robustlens checkpoint would carry, so callers of :func:`~robustlens.models.checkpoint.load_checkpoint`
    need no second case."""
    ref = split_ref(value, key=key)
    if ref is None:
        raise UserError(f"{key}: {value!r} is not NAME@PATH with a catalogue entry NAME")
    e, path = ref
    model = import_published(e.name, path, device, key=key)
    sc = {"arch": e.arch, "num_classes": e.num_classes, "model_kwargs": dict(e.arch_options),
          "normalize": model.normalize.to_dict(), **sidecar_meta(e, path, model.import_info)}
    return model, sc


def check_study_input(e: Entry, preprocessing: str, size: int, where: str) -> None:
    """A study feeds entry ``e`` the images it was trained on: same preprocessing (and size for
    ``squash``); otherwise one line naming the spec key."""
    if preprocessing not in PREPROCESSING:
        raise UserError(f"{where}: data.preprocessing {preprocessing!r} is not one of {', '.join(PREPROCESSING)}")
    if preprocessing != e.preprocessing:
        raise UserError(f"{where}: {e.name} expects data.preprocessing = \"{e.preprocessing}\" ({e.input_size} px), "
                        f"but the study's data.preprocessing is \"{preprocessing}\"")
    if e.preprocessing == "squash" and size not in (0, e.input_size):
        raise UserError(f"{where}: {e.name} takes {e.input_size}x{e.input_size} images, but data.size = {size}")


def rows() -> list[dict]:
    """The catalogue as table rows (``robustlens models --catalogue``)."""
    out = []
    for e in CATALOGUE.values():
        clean = next((r for r in e.reported if r.metric == "clean"), None)
        robust = next((r for r in e.reported if r.metric == "robust"), None)
        out.append({"name": e.name, "arch": e.arch, "layout": "/".join(e.layouts), "classes": e.num_classes,
                    "input": f"{e.input_size}px {e.preprocessing}", "threat": f"{e.threat} {e.eps}".strip(),
                    "clean": clean.accuracy if clean else None,
                    "robust": f"{robust.accuracy} ({robust.attack}, {robust.eps})" if robust else "",
                    "source": clean.source if clean else ""})
    return out

