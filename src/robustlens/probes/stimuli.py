"""Shape bias and shape-only accuracy on Geirhos et al.'s stimulus sets, for any classifier.

A model answers in its own classes; the stimuli are labelled with categories (the 16 of
Geirhos et al. 2019, or any others). A :class:`ClassMap` joins the two: each category has one
or more member classes of the model, and the model's decision is the category whose members
have the highest *mean* softmax probability, the forced choice among the categories that the
human observers made too. This is model-vs-human's ``ImageNetProbabilitiesTo16ClassesMapping``
(``np.mean`` over each category's ImageNet indices, then the arg-max) for ``"imagenet16"``
(:func:`imagenet16_map`), and the same rule for a user's table (:func:`table_map`; e.g.
CIFAR-10: ``{airplane = "airplane", car = "automobile", ..., boat = "ship"}``).

Images whose categories the map lacks are dropped (a cue-conflict image needs both its shape
and its texture category, else a texture hit could not be counted).

Shape bias follows model-vs-human (``shape_bias = shape hits / (shape hits + texture hits)``
over the cue-conflict images whose shape and texture categories differ; the images whose two
cues agree are left out), through :func:`robustlens.probes.bias.cue_conflict_bias`. On the
silhouette and edge sets, the accuracy of the decision.

:data:`REFERENCES`: published shape biases on the same cue-conflict stimuli, for the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from robustlens.data.base import ImageSet
from robustlens.errors import UserError

IMAGENET16 = "imagenet16"


@dataclass(frozen=True)
class Reference:
    """A published shape bias on Geirhos et al.'s 1,280 cue-conflict images."""

    label: str
    shape_bias: float
    source: str


#: published shape biases shown next to the measured models (the values issue 18 gives; the
#: paper texts in ../shared/seeds do not print them, so each is cited to where it is published)
REFERENCES: tuple[Reference, ...] = (
    Reference("humans", 0.96, "Geirhos et al. (2019), ICLR, Fig. 4: human observers on the cue-conflict images"),
    Reference("ResNet-50 (standard, torchvision)", 0.21,
              "Geirhos et al. (2019), ICLR, Fig. 4 / model-vs-human (Geirhos et al. 2021, NeurIPS)"),
    Reference("ResNet-50, Linf-robust eps 4/255 (Salman et al. 2020)", 0.62,
              "model-vs-human benchmark (Geirhos et al. 2021, NeurIPS) of Salman et al.'s (2020) robust ImageNet models"),
    Reference("ResNet-50, Linf-robust eps 8/255 (Salman et al. 2020)", 0.72,
              "model-vs-human benchmark (Geirhos et al. 2021, NeurIPS) of Salman et al.'s (2020) robust ImageNet models"),
)


@dataclass(frozen=True)
class ClassMap:
    """Categories and, per category, the indices of the model's classes it aggregates."""

    name: str
    categories: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]

    def aggregate(self, logits: Tensor) -> Tensor:
        """(N, categories): the mean softmax probability of each category's members."""
        p = torch.softmax(logits.float(), dim=1)
        return torch.stack([p[:, list(m)].mean(1) for m in self.members], dim=1)

    def decide(self, logits: Tensor) -> Tensor:
        """The index (into :attr:`categories`) of each image's decision."""
        return self.aggregate(logits).argmax(1)


def imagenet16_map(model_classes: Sequence[str]) -> ClassMap:
    """The 16-category aggregation for a model over the 1000 ImageNet-1k classes (its classes
    the WordNet ids or the names, in the standard index order)."""
    from robustlens.data.imagenet import imagenet16_categories, imagenet_names, imagenet_wnids

    classes = list(model_classes)
    if classes not in (imagenet_wnids(), imagenet_names()):
        shown = ", ".join(classes[:4]) + (" ..." if len(classes) > 4 else "")
        raise UserError(f"class_map {IMAGENET16!r}: needs a model over the 1000 ImageNet-1k classes in index order; "
                        f"the model has {len(classes)} classes ({shown}); give a table mapping each stimulus "
                        "category onto the model's classes instead")
    cats = imagenet16_categories()
    return ClassMap(IMAGENET16, tuple(cats), tuple(cats.values()))


def table_map(table: Mapping[str, str | Sequence[str]], model_classes: Sequence[str], where: str = "class_map") -> ClassMap:
    """A user's ``{category: model class or [classes]}``; a class the model lacks is an error."""
    classes = list(model_classes)
    index = {c: i for i, c in enumerate(classes)}
    if not table:
        raise UserError(f"{where}: an empty mapping; expected {{stimulus category: model class, ...}}")
    members = []
    for cat, value in table.items():
        names = [value] if isinstance(value, str) else list(value)
        if not names or not all(isinstance(n, str) for n in names):
            raise UserError(f"{where}.{cat}: expected a class name or a list of them, got {value!r}")
        missing = [n for n in names if n not in index]
        if missing:
            shown = ", ".join(classes[:10]) + (f" ... ({len(classes)} in all)" if len(classes) > 10 else "")
            raise UserError(f"{where}.{cat}: the model has no class {missing[0]!r}; its classes: {shown}")
        members.append(tuple(index[n] for n in names))
    return ClassMap("table", tuple(table), tuple(members))


def class_map(spec: str | Mapping, model_classes: Sequence[str], where: str = "class_map") -> ClassMap:
    """``"imagenet16"`` or a table, as :func:`imagenet16_map` / :func:`table_map` build them."""
    if isinstance(spec, str):
        if spec != IMAGENET16:
            raise UserError(f"{where}: unknown class map {spec!r}; expected {IMAGENET16!r} or a table "
                            "{stimulus category: model class, ...}")
        return imagenet16_map(model_classes)
    return table_map(spec, model_classes, where)


def mapped(stimuli: ImageSet, cmap: ClassMap) -> tuple[ImageSet, Tensor, Tensor]:
    """The stimuli whose shape and texture categories the map has, and those two categories
    as indices into ``cmap.categories``."""
    where = {c: k for k, c in enumerate(cmap.categories)}
    to_cat = torch.tensor([where.get(c, -1) for c in stimuli.classes], dtype=torch.int64)
    shape, texture = to_cat[stimuli.factor("shape")], to_cat[stimuli.factor("texture")]
    keep = (shape >= 0) & (texture >= 0)
    return stimuli.subset(keep.nonzero().flatten()), shape[keep], texture[keep]


@torch.no_grad()
def decisions(model: nn.Module, stimuli: ImageSet, cmap: ClassMap, batch_size: int = 64,
              device: str | torch.device | None = None) -> Tensor:
    """The map's decision (category index, CPU) for every image of ``stimuli``."""
    from robustlens.evalmode import eval_mode

    dev = torch.device(device) if device is not None else next(model.parameters()).device
    with eval_mode(model):
        out = [cmap.decide(model(stimuli.float(slice(s, s + batch_size), dev)).cpu())
               for s in range(0, len(stimuli), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def measure(model: nn.Module, stimuli: ImageSet, cmap: ClassMap, batch_size: int = 64,
            device: str | torch.device | None = None) -> dict[str, Any]:
    """Shape bias (cue-conflict set) or accuracy (silhouettes, edges) of ``model`` on ``stimuli``."""
    from robustlens.probes.bias import cue_conflict_bias

    kept, shape, texture = mapped(stimuli, cmap)
    pred = decisions(model, kept, cmap, batch_size, device)
    out: dict[str, Any] = {"n": len(kept), "dropped": len(stimuli) - len(kept), "class_map": cmap.name}
    if stimuli.meta.get("kind") == "cue_conflict":
        out.update(cue_conflict_bias(pred, shape, texture))
    else:
        out["accuracy"] = float((pred == shape).float().mean()) if len(kept) else float("nan")
        out["hits"] = int((pred == shape).sum())
    return out


def evaluate_stimuli(models: Mapping[str, nn.Module], sets: Mapping[str, ImageSet], cmap: ClassMap,
                     batch_size: int = 64, device: str | torch.device | None = None) -> dict[str, dict[str, Any]]:
    """``{model: {set kind: measure(...)}}`` for every model and stimulus set."""
    return {name: {kind: measure(m, s, cmap, batch_size, device) for kind, s in sets.items()}
            for name, m in models.items()}
