"""Late fusion of pre-trained backbones (Itazuri et al. 2019, Sec. 4.2 and Fig. 9).

Two pre-trained classifiers (standard, STD, or adversarially trained, ADV) are merged in
the last layer: their penultimate features are concatenated and fed to a new linear head
that is trained on a target data set. Variants: STD, ADV (one backbone), STD+STD, ADV+ADV
(two backbones of the same kind, trained with different seeds) and STD+ADV. The paper
fine-tunes everything for 30 epochs at lr 0.001 (SGD, momentum 0.9); a linear probe
(frozen backbones, new head only) is offered as the fast path: its features are computed
once per backbone and target, then shared by every variant and repeat.

The paper's claim: ADV+ADV wins on low-resolution data sets, STD+STD on high-resolution
ones, and STD+ADV is close to the best everywhere.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlens.errors import UserError
from robustlens.io import versions, write_bytes_atomic, write_json_atomic
from robustlens.models.base import ImageClassifier
from robustlens.transfer._loops import accuracy, batch_order, progress, sgd_fit

#: the paper's fine-tuning protocol (Sec. 4.2): 30 epochs, lr 0.001, SGD momentum 0.9
PAPER_EPOCHS = 30
PAPER_LR = 1e-3
#: linear probe defaults (standardised features, so one lr suits STD and ADV features alike)
LINEAR_EPOCHS = 30
LINEAR_LR = 0.05

DEFAULT_VARIANTS = ("std", "adv", "std+std", "adv+adv", "std+adv")


class LateFusion(ImageClassifier):
    """One or two backbones whose penultimate features feed a new linear head.

    ``forward(x)`` takes images in [0, 1]; each backbone applies its own normalisation
    (``backbone.penultimate(x)``), so the fused model keeps the robustlens model contract
    (its own ``normalize`` is the identity). ``penultimate(x)`` is the concatenation
    ``[g_a(x), g_b(x)]`` of size ``F_a + F_b``; ``head`` is ``nn.Linear(F_a + F_b, num_classes)``.

    ``freeze_backbones()`` makes the backbones fixed feature extractors (no gradients, and
    kept in eval mode so batch-norm statistics do not move): the linear-probe setting.
    """

    arch = "late_fusion"

    def __init__(self, backbone_a: nn.Module, backbone_b: nn.Module | None = None, num_classes: int = 10) -> None:
        super().__init__((0.0,), (1.0,))  # identity: each backbone normalises its own input
        if not isinstance(num_classes, int) or num_classes < 1:
            raise UserError(f"num_classes: expected a positive integer, got {num_classes!r}")
        backbones = [backbone_a] + ([backbone_b] if backbone_b is not None else [])
        for i, b in enumerate(backbones):
            if not hasattr(b, "penultimate") or not int(getattr(b, "num_features", 0) or 0):
                raise UserError(f"backbone {i}: expected a robustlens ImageClassifier (penultimate(), num_features), got {type(b).__name__}")
        if backbone_b is not None and backbone_b is backbone_a:
            raise UserError("late fusion: the two backbones are the same object; pass two different models")
        self.backbones = nn.ModuleList(backbones)
        self.num_features = sum(int(b.num_features) for b in backbones)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.frozen = False
        self.config = {"num_classes": num_classes, "backbones": [getattr(b, "arch", type(b).__name__) for b in backbones]}

    @property
    def head(self) -> nn.Linear:
        return self.fc

    def forward_features(self, x: Tensor) -> Tensor:
        """``[g_a(x), g_b(x)]``: each backbone's own ``penultimate`` (it normalises ``x`` itself)."""
        return torch.cat([b.penultimate(x) for b in self.backbones], dim=1)

    def penultimate(self, x: Tensor) -> Tensor:
        return self.forward_features(x)

    def freeze_backbones(self, frozen: bool = True) -> "LateFusion":
        self.frozen = frozen
        for p in self.backbones.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> "LateFusion":
        super().train(mode)
        if self.frozen:
            self.backbones.eval()
        return self


# ----------------------------------------------------------------------------- variants


def parse_variants(spec: str | Sequence[str]) -> list[str]:
    """``"std,adv,std+adv"`` -> ``["std", "adv", "std+adv"]`` (lower case, order kept, no repeats)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for raw in items:
        v = str(raw).strip().lower().replace(" ", "")
        if not v:
            continue
        parts = v.split("+")
        if len(parts) > 2 or any(not p for p in parts):
            raise UserError(f"--variants: {raw!r} is not a variant; expected KIND or KIND+KIND such as std, adv, std+adv")
        if v not in out:
            out.append(v)
    if not out:
        raise UserError("--variants: no variant given; expected e.g. std,adv,std+std,adv+adv,std+adv")
    return out


def variant_members(variant: str) -> list[tuple[str, int]]:
    """The backbones a variant uses: the k-th occurrence of a kind takes that kind's k-th checkpoint.

    ``"std+std"`` -> ``[("std", 0), ("std", 1)]``; ``"std+adv"`` -> ``[("std", 0), ("adv", 0)]``.
    """
    seen: dict[str, int] = {}
    out = []
    for kind in variant.split("+"):
        out.append((kind, seen.get(kind, 0)))
        seen[kind] = seen.get(kind, 0) + 1
    return out


def check_variants(variants: Sequence[str], available: dict[str, int]) -> None:
    """UserError unless every variant finds its backbones (``available``: kind -> count)."""
    for v in variants:
        need: dict[str, int] = {}
        for kind, _ in variant_members(v):
            need[kind] = need.get(kind, 0) + 1
        for kind, k in need.items():
            have = available.get(kind, 0)
            if have < k:
                what = "two different" if k == 2 else "a"
                raise UserError(
                    f"--variants: {v!r} needs {what} {kind!r} checkpoint{'s' if k > 1 else ''} "
                    f"(--backbone {kind}=CKPT{' twice, different seeds' if k > 1 else ''}), got {have}"
                )


# ----------------------------------------------------------------------------- backbones


@dataclass
class Backbone:
    """A pre-trained model with its provenance (the checkpoint path, or ``None``)."""

    model: ImageClassifier
    kind: str
    index: int
    source: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.model.first_conv.in_channels)

    @property
    def input_size(self) -> int | None:
        """The side the backbone was trained at, when its checkpoint sidecar records it.

        Looks for ``input_size`` / ``image_size`` / ``resolution`` (top level, ``training``,
        ``data``), else a ``size=N`` in the training data's source string; ``None`` if unknown.
        """
        for key in ("input_size", "image_size", "resolution"):
            for where in (self.meta, self.meta.get("training", {}) or {}, self.meta.get("data", {}) or {}):
                v = where.get(key) if isinstance(where, dict) else None
                if v is not None:
                    return int(v[0] if isinstance(v, (list, tuple)) else v)
        data = self.meta.get("data")
        if isinstance(data, str):
            import re

            m = re.search(r"size=(\d+)", data)
            if m:
                return int(m.group(1))
        return None


def load_backbone(entry: Any, kind: str, index: int, device: torch.device | str = "cpu") -> Backbone:
    """A model, or a checkpoint path read with ``robustlens.models.checkpoint.load_checkpoint``."""
    if isinstance(entry, Backbone):
        return entry
    if isinstance(entry, nn.Module):
        return Backbone(entry.to(device), kind, index, source=f"<{type(entry).__name__} object>")
    path = Path(entry)
    if not path.exists():
        raise UserError(f"--backbone {kind}={path}: file not found")
    try:
        from robustlens.models.checkpoint import load_checkpoint
    except ImportError:
        raise UserError("--backbone: reading checkpoints needs robustlens.models.checkpoint, which is not installed") from None
    model, meta = load_checkpoint(path, device=device)
    return Backbone(model, kind, index, source=str(path), meta=dict(meta or {}))


def check_backbones(backbones: Sequence[Backbone]) -> None:
    """All backbones of one study must agree on input channels, source classes and input size."""
    if not backbones:
        raise UserError("--backbone: no backbone given; expected e.g. --backbone std=A.safetensors --backbone adv=B.safetensors")
    ref = backbones[0]
    for b in backbones[1:]:
        name = f"--backbone {b.kind}={b.source}"
        if b.in_channels != ref.in_channels:
            raise UserError(f"{name}: takes {b.in_channels}-channel input but {ref.kind}={ref.source} takes {ref.in_channels}")
        if b.model.num_classes != ref.model.num_classes:
            raise UserError(
                f"{name}: trained on {b.model.num_classes} classes but {ref.kind}={ref.source} on "
                f"{ref.model.num_classes}; backbones of one study must share their source task"
            )
        if b.input_size is not None and ref.input_size is not None and b.input_size != ref.input_size:
            raise UserError(
                f"{name}: trained at {b.input_size}px but {ref.kind}={ref.source} at {ref.input_size}px; "
                "backbones of one study must share their input size"
            )


# ----------------------------------------------------------------------------- targets


@dataclass
class Target:
    """A target data set: train and test splits at one resolution."""

    name: str
    train: Any  # ImageSet
    test: Any  # ImageSet
    source: str = ""

    @property
    def resolution(self) -> int:
        return int(self.train.resolution[0])

    @property
    def label(self) -> str:
        return f"{self.name} {self.resolution}px"


def _source_name(source: str) -> str:
    s = str(source)
    base = s.split(":", 1)[0] if ":" in s and not Path(s).exists() else s
    return Path(base).name.split(".")[0] or base


def load_target(source: Any, size: int | None = None, **options) -> Target:
    """``(source, size)`` -> train/test splits via ``robustlens.data.load(source, split, size=size)``."""
    if isinstance(source, Target):
        return source
    if isinstance(source, tuple) and len(source) == 3:  # (name, train ImageSet, test ImageSet)
        return Target(str(source[0]), source[1], source[2], source=str(source[0]))
    from robustlens.data import load

    train = load(str(source), split="train", size=size, **options)
    test = load(str(source), split="test", size=size, **options)
    return Target(_source_name(str(source)), train, test, source=str(source))


def check_target(target: Target, backbones: Sequence[Backbone]) -> None:
    for split, data in (("train", target.train), ("test", target.test)):
        if len(data) == 0:
            raise UserError(f"--target {target.source or target.name}: the {split} split is empty")
    ch = backbones[0].in_channels
    if target.train.channels != ch or target.test.channels != ch:
        raise UserError(f"--target {target.source or target.name}: {target.train.channels}-channel images, but the backbones take {ch} channels")
    if target.train.resolution != target.test.resolution:
        raise UserError(f"--target {target.source or target.name}: train is {target.train.resolution} but test {target.test.resolution}; use one size")
    if target.train.num_classes != target.test.num_classes:
        raise UserError(f"--target {target.source or target.name}: train has {target.train.num_classes} classes but test {target.test.num_classes}")
    probe = target.train.float(slice(0, 1))
    for b in backbones:
        try:
            with torch.no_grad():
                was = b.model.training
                b.model.eval()
                b.model.penultimate(probe.to(next(b.model.parameters()).device))
                b.model.train(was)
        except RuntimeError as e:
            raise UserError(
                f"--target {target.source or target.name}: backbone {b.kind}={b.source} cannot take "
                f"{target.resolution}px input ({str(e).splitlines()[0]})"
            ) from None


# ----------------------------------------------------------------------------- training


@torch.no_grad()
def compute_features(model: nn.Module, images: Tensor | Any, batch_size: int = 256, device: torch.device | str = "cpu", show_progress: bool = False, desc: str = "features") -> Tensor:
    """``model.penultimate`` of every image (eval mode), on CPU as float32 (N, F).

    ``images``: an ImageSet (uint8, converted batch by batch) or float images in [0, 1].
    """
    was = model.training
    model.eval()
    n = len(images)
    out = []
    for s in progress(range(0, n, batch_size), total=math.ceil(n / batch_size), desc=desc, enabled=show_progress):
        if isinstance(images, Tensor):
            xb = images[s : s + batch_size].to(device)
        else:
            xb = images.float(slice(s, s + batch_size), device=device)
        out.append(model.penultimate(xb).float().cpu())
    model.train(was)
    return torch.cat(out) if out else torch.empty(0)


def _new_head(in_features: int, num_classes: int, seed: int) -> nn.Linear:
    """A freshly initialised head; its initial weights depend only on ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return nn.Linear(in_features, num_classes)


def fit_linear_head(
    head: nn.Linear,
    feats: Tensor,
    y: Tensor,
    *,
    epochs: int = LINEAR_EPOCHS,
    lr: float = LINEAR_LR,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    standardize: bool = True,
    feature_fn=None,
    device: torch.device | str = "cpu",
) -> nn.Linear:
    """Train ``head`` by SGD on features (the linear probe), in place.

    ``feats`` are precomputed features (N, F) (the fast path), or, when ``feature_fn`` is
    given, ``feats`` holds the images and ``feature_fn(x_batch)`` computes features on the fly
    (the end-to-end path; same batch order from the same seed, so both give the same head).

    ``standardize``: train on z-scored features ``z = (f - m) / s`` (training-set statistics),
    then fold the statistics into the head (``W' = W / s``, ``b' = b - W' m``), so the result
    is an ordinary head on raw features. This keeps one learning rate usable for backbones
    whose feature scales differ (ADV features are typically much smaller than STD ones).
    """
    n = len(y)
    if feature_fn is None:
        get = lambda idx: feats[idx].to(device)  # noqa: E731
    else:
        get = lambda idx: feature_fn(feats[idx].to(device) if isinstance(feats, Tensor) else feats.float(idx, device=device))  # noqa: E731
    if standardize:
        if feature_fn is None:
            f_all = feats.to(device)
        else:
            f_all = torch.cat([get(idx) for idx in batch_order(n, 512, torch.Generator(), shuffle=False)])
        m = f_all.mean(0)
        s = f_all.std(0, unbiased=False).clamp_min(1e-6)
    else:
        m = s = None
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(int(seed))
    y = y.to(device)
    for _ in range(epochs):
        for idx in batch_order(n, batch_size, g):
            with torch.no_grad():
                f = get(idx)
                if standardize:
                    f = (f - m) / s
            loss = F.cross_entropy(head(f), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if standardize:
        with torch.no_grad():
            w = head.weight / s
            head.bias.sub_(w @ m)
            head.weight.copy_(w)
    return head


@dataclass
class RunResult:
    variant: str
    dataset: str
    resolution: int
    repeat: int
    seed: int
    test_accuracy: float
    train_accuracy: float
    seconds: float


def _fit_finetune(model: LateFusion, target: Target, *, epochs: int, lr: float, batch_size: int, weight_decay: float, seed: int, device, show_progress: bool) -> None:
    """Full fine-tuning (Itazuri et al. 2019: 30 epochs, lr 0.001, SGD momentum 0.9, constant lr)."""
    try:
        from robustlens.train import TrainConfig, train  # type: ignore[attr-defined]
    except ImportError:
        TrainConfig = train = None
    batch_size = min(batch_size, len(target.train))
    if train is not None:
        import dataclasses

        # check_size=0: no held-out part of the target's training split; log=False: quiet.
        wanted = dict(mode="std", epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, schedule="constant", momentum=0.9,
                      weight_decay=weight_decay, augment=False, check_size=0, progress=show_progress, log=False)
        names = {f.name for f in dataclasses.fields(TrainConfig)} if dataclasses.is_dataclass(TrainConfig) else set(wanted)
        if {"mode", "epochs", "lr", "batch_size", "seed"} <= names:
            cfg = TrainConfig(**{k: v for k, v in wanted.items() if k in names})
            train(model, target.train, cfg, device=device)
            return
    x = target.train.float()
    sgd_fit(model, x, target.train.labels, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed, device=device, show_progress=show_progress, desc="finetune")


# ----------------------------------------------------------------------------- the study


def run_fusion_study(
    backbones: dict[str, list[Any]],
    targets: Sequence[Any],
    variants: Sequence[str] | str = DEFAULT_VARIANTS,
    repeats: int = 3,
    mode: str = "linear",
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    standardize: bool = True,
    seed: int = 0,
    out_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
) -> dict:
    """Train every variant on every target ``repeats`` times; return (and write) the table.

    Args:
        backbones: kind -> list of models or checkpoint paths, e.g.
            ``{"std": ["std_s0.safetensors", "std_s1.safetensors"], "adv": [...]}``; the k-th
            occurrence of a kind in a variant uses that kind's k-th entry.
        targets: ``(source, size)`` pairs read with ``robustlens.data.load`` (train and test
            splits), :class:`Target` objects, or ``(name, train_set, test_set)`` triples.
        variants: e.g. ``"std,adv,std+std,adv+adv,std+adv"``.
        repeats: training runs per (variant, target), seeds ``seed .. seed + repeats - 1``
            (head initialisation and batch order; the backbones stay the same).
        mode: ``"linear"`` (frozen backbones, features computed once) or ``"finetune"``
            (every weight trained; the paper's protocol, defaults 30 epochs at lr 0.001).

    Returns a dict with ``config``, ``runs`` (one row per training run) and ``table`` (one row
    per variant x data set x resolution with mean and std of the test accuracy).
    """
    t_start = time.time()
    device = torch.device(device)
    if mode not in ("linear", "finetune"):
        raise UserError(f"--mode: expected linear or finetune, got {mode!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"--repeats: expected a positive integer, got {repeats!r}")
    variants = parse_variants(variants)
    if not isinstance(backbones, dict) or not backbones:
        raise UserError("--backbone: no backbone given; expected e.g. --backbone std=A.safetensors --backbone adv=B.safetensors")
    kinds = {str(k).lower(): (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in backbones.items()}
    check_variants(variants, {k: len(v) for k, v in kinds.items()})
    if targets is None or len(targets) == 0:
        raise UserError("--target: no target data set given; expected e.g. --target trifeature:size=32")
    epochs = int(epochs if epochs is not None else (PAPER_EPOCHS if mode == "finetune" else LINEAR_EPOCHS))
    lr = float(lr if lr is not None else (PAPER_LR if mode == "finetune" else LINEAR_LR))

    needed = sorted({m for v in variants for m in variant_members(v)})
    loaded = {(k, i): load_backbone(kinds[k][i], k, i, device) for k, i in needed}
    check_backbones(list(loaded.values()))

    tgts = []
    for t in targets:
        if isinstance(t, (Target,)) or (isinstance(t, tuple) and len(t) == 3):
            tgts.append(load_target(t))
        else:
            src, size = (t if isinstance(t, (tuple, list)) else (t, None))
            tgts.append(load_target(src, size))
    for t in tgts:
        check_target(t, list(loaded.values()))
    tgts.sort(key=lambda t: (t.resolution, t.name))

    runs: list[RunResult] = []
    total = len(tgts) * len(variants) * repeats
    bar = progress(range(total), total=total, desc="fusion", enabled=show_progress)
    bar_it = iter(bar)
    for t in tgts:
        feats_train: dict[tuple[str, int], Tensor] = {}
        feats_test: dict[tuple[str, int], Tensor] = {}
        if mode == "linear":
            for key, b in loaded.items():
                feats_train[key] = compute_features(b.model, t.train, device=device, show_progress=show_progress, desc=f"features {b.kind}{b.index} {t.label}")
                feats_test[key] = compute_features(b.model, t.test, device=device)
        for v in variants:
            members = variant_members(v)
            for r in range(repeats):
                s = seed + r
                t0 = time.time()
                if mode == "linear":
                    ftr = torch.cat([feats_train[m] for m in members], 1)
                    fte = torch.cat([feats_test[m] for m in members], 1)
                    head = _new_head(ftr.shape[1], t.train.num_classes, s)
                    fit_linear_head(head, ftr, t.train.labels, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=s, standardize=standardize)
                    with torch.no_grad():
                        tr_acc = float((head(ftr).argmax(1) == t.train.labels).float().mean())
                        te_acc = float((head(fte).argmax(1) == t.test.labels).float().mean())
                else:
                    parts = [copy.deepcopy(loaded[m].model) for m in members]
                    model = LateFusion(parts[0], parts[1] if len(parts) > 1 else None, t.train.num_classes).to(device)
                    model.fc = _new_head(model.num_features, t.train.num_classes, s).to(device)
                    _fit_finetune(model, t, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=s, device=device, show_progress=show_progress)
                    model.eval()
                    tr_acc = accuracy(model, t.train.float(), t.train.labels, device=device)
                    te_acc = accuracy(model, t.test.float(), t.test.labels, device=device)
                runs.append(RunResult(v, t.name, t.resolution, r, s, te_acc, tr_acc, time.time() - t0))
                next(bar_it, None)
    if hasattr(bar, "close"):
        bar.close()

    table = summarise(runs, variants, tgts)
    result = {
        "config": {
            "mode": mode,
            "epochs": epochs,
            "lr": lr,
            "momentum": 0.9,
            "batch_size": batch_size,
            "weight_decay": weight_decay,
            "standardize": standardize if mode == "linear" else None,
            "repeats": repeats,
            "seed": seed,
            "variants": variants,
            "backbones": {f"{k}{i}": {"kind": b.kind, "source": b.source, "arch": getattr(b.model, "arch", ""), "num_features": int(b.model.num_features)} for (k, i), b in loaded.items()},
            "targets": [{"name": t.name, "source": t.source, "resolution": t.resolution, "n_train": len(t.train), "n_test": len(t.test), "classes": t.train.num_classes} for t in tgts],
            "device": str(device),
        },
        "runs": [r.__dict__ for r in runs],
        "table": table,
        "pattern": paper_pattern(table),
        "seconds": time.time() - t_start,
        "versions": versions(),
    }
    if out_dir is not None:
        write_outputs(result, out_dir)
    return result


def summarise(runs: Sequence[RunResult], variants: Sequence[str], targets: Sequence[Target]) -> list[dict]:
    """One row per (variant, data set, resolution): mean and population std of test accuracy."""
    rows = []
    for t in targets:
        for v in variants:
            accs = [r.test_accuracy for r in runs if r.variant == v and r.dataset == t.name and r.resolution == t.resolution]
            if not accs:
                continue
            a = torch.tensor(accs, dtype=torch.float64)
            rows.append(
                {
                    "variant": v,
                    "dataset": t.name,
                    "resolution": t.resolution,
                    "mean": float(a.mean()),
                    "std": float(a.std(unbiased=False)),
                    "repeats": len(accs),
                    "accuracies": accs,
                }
            )
    return rows


def paper_pattern(table: Sequence[dict]) -> dict:
    """Check the paper's claim per data set: which variant is best, and how far STD+ADV is behind.

    Returns, per ``"dataset Rpx"``: the best variant, the gap of ``std+adv`` to the best (in
    accuracy points) and, overall, whether ADV+ADV beats STD+STD at the lowest resolution and
    STD+STD beats ADV+ADV at the highest.
    """
    by_set: dict[tuple[str, int], dict[str, float]] = {}
    for row in table:
        by_set.setdefault((row["dataset"], row["resolution"]), {})[row["variant"]] = row["mean"]
    out: dict[str, Any] = {"per_dataset": {}}
    for (name, res), accs in sorted(by_set.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        best = max(accs, key=accs.get)
        entry = {"best": best, "best_accuracy": accs[best]}
        if "std+adv" in accs:
            entry["std+adv_gap_to_best"] = accs[best] - accs["std+adv"]
        if "std+std" in accs and "adv+adv" in accs:
            entry["adv+adv_minus_std+std"] = accs["adv+adv"] - accs["std+std"]
        out["per_dataset"][f"{name} {res}px"] = entry
    diffs = [(k, e["adv+adv_minus_std+std"]) for k, e in out["per_dataset"].items() if "adv+adv_minus_std+std" in e]
    if len(diffs) >= 2:
        out["adv+adv_wins_lowest_resolution"] = diffs[0][1] > 0
        out["std+std_wins_highest_resolution"] = diffs[-1][1] < 0
    return out


def table_markdown(table: Sequence[dict]) -> str:
    """Variants as rows, data sets (ordered by resolution) as columns: ``mean +- std`` in %."""
    cols: list[tuple[str, int]] = []
    for row in table:
        key = (row["dataset"], row["resolution"])
        if key not in cols:
            cols.append(key)
    cols.sort(key=lambda c: (c[1], c[0]))
    variants: list[str] = []
    for row in table:
        if row["variant"] not in variants:
            variants.append(row["variant"])
    cell = {(r["variant"], r["dataset"], r["resolution"]): r for r in table}
    best = {c: max((cell[(v, *c)]["mean"] for v in variants if (v, *c) in cell), default=None) for c in cols}
    lines = ["| variant | " + " | ".join(f"{n} {r}px" for n, r in cols) + " |", "| --- |" + " --- |" * len(cols)]
    for v in variants:
        cells = []
        for c in cols:
            r = cell.get((v, *c))
            if r is None:
                cells.append("")
                continue
            text = f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}"
            cells.append(f"**{text}**" if best[c] is not None and r["mean"] == best[c] else text)
        lines.append(f"| {v.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(table: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["variant", "dataset", "resolution", "mean", "std", "repeats", "accuracies"])
    for r in table:
        w.writerow([r["variant"], r["dataset"], r["resolution"], f"{r['mean']:.6f}", f"{r['std']:.6f}", r["repeats"], " ".join(f"{a:.6f}" for a in r["accuracies"])])
    return buf.getvalue()


def plot_fusion(table: Sequence[dict], path: str | Path, title: str = "") -> None:
    """Fig. 9 style: accuracy per data set (ordered by resolution), one bar group per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = sorted({(r["dataset"], r["resolution"]) for r in table}, key=lambda c: (c[1], c[0]))
    variants: list[str] = []
    for r in table:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    cell = {(r["variant"], r["dataset"], r["resolution"]): r for r in table}
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cols) * max(1, len(variants)) / 4, 3.6))
    width = 0.8 / max(1, len(variants))
    colours = {"std": "#1f77b4", "adv": "#d62728", "std+std": "#6baed6", "adv+adv": "#fc9272", "std+adv": "#2ca02c"}
    lo = 1.0
    for j, v in enumerate(variants):
        xs, ms, ss = [], [], []
        for i, c in enumerate(cols):
            r = cell.get((v, *c))
            if r is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ms.append(100 * r["mean"])
            ss.append(100 * r["std"])
            lo = min(lo, r["mean"] - r["std"])
        ax.bar(xs, ms, width, yerr=ss, capsize=2, label=v.upper(), color=colours.get(v), edgecolor="black", linewidth=0.4)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([f"{n}\n{r}px" for n, r in cols])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(0.0, 100 * lo - 5), 100)
    ax.set_xlabel("target data set (ordered by resolution)")
    ax.legend(fontsize=7, ncol=min(5, len(variants)), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def write_outputs(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """``results.json``, ``table.csv``, ``table.md`` and ``fusion.png`` in ``out_dir`` (atomic)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "table.csv", "md": out / "table.md", "png": out / "fusion.png"}
    write_json_atomic(paths["json"], result)
    write_bytes_atomic(paths["csv"], table_csv(result["table"]).encode())
    cfg = result.get("config", {})
    header = f"Late fusion, mode={cfg.get('mode')}, epochs={cfg.get('epochs')}, lr={cfg.get('lr')}, repeats={cfg.get('repeats')}; test accuracy (%) mean ± std\n\n"
    write_bytes_atomic(paths["md"], (header + table_markdown(result["table"])).encode())
    plot_fusion(result["table"], paths["png"], title=f"late fusion ({cfg.get('mode')})")
    return paths
