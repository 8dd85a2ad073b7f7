"""A late-fusion study (Itazuri et al. 2019, Sec. 4.2 and Fig. 9): every variant on every target,
``repeats`` times; :func:`run_fusion_study` reads as its steps (check the settings, load the
backbones and the targets, fit every run, summarise, write)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from robustlens.errors import UserError
from robustlens.io import versions
from robustlens.progress import track
from robustlens.transfer._loops import accuracy
from robustlens.transfer.fusion.fit import (
    LINEAR_EPOCHS,
    LINEAR_LR,
    PAPER_EPOCHS,
    PAPER_LR,
    compute_features,
    fit_finetune,
    fit_linear_head,
    new_head,
)
from robustlens.transfer.fusion.inputs import Backbone, Target, check_backbones, check_target, load_backbone, load_target
from robustlens.transfer.fusion.model import LateFusion
from robustlens.transfer.fusion.pattern import paper_pattern
from robustlens.transfer.fusion.report import write_outputs
from robustlens.transfer.fusion.variants import DEFAULT_VARIANTS, check_variants, parse_variants, variant_members

Key = tuple[str, int]  # (kind, index): a backbone


@dataclass
class RunResult:
    """One training run of one variant on one target."""

    variant: str
    dataset: str
    resolution: int
    repeat: int
    seed: int
    test_accuracy: float
    train_accuracy: float
    seconds: float


@dataclass(frozen=True)
class FitSettings:
    """How every run of a study is fitted (``mode``: ``linear`` or ``finetune``)."""

    mode: str
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    standardize: bool
    show_progress: bool


def _settings(mode: str, repeats: int, epochs: int | None, lr: float | None, batch_size: int, weight_decay: float,
              standardize: bool, show_progress: bool) -> FitSettings:
    if mode not in ("linear", "finetune"):
        raise UserError(f"--mode: expected linear or finetune, got {mode!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"--repeats: expected a positive integer, got {repeats!r}")
    epochs = int(epochs if epochs is not None else (PAPER_EPOCHS if mode == "finetune" else LINEAR_EPOCHS))
    lr = float(lr if lr is not None else (PAPER_LR if mode == "finetune" else LINEAR_LR))
    return FitSettings(mode, epochs, lr, batch_size, weight_decay, standardize, show_progress)


def _backbone_entries(backbones: dict[str, list[Any]], variants: list[str]) -> dict[str, list]:
    """kind -> entries (lower-case kinds), checked against what the variants need."""
    if not isinstance(backbones, dict) or not backbones:
        raise UserError("--backbone: no backbone given; expected e.g. --backbone std=A.safetensors --backbone adv=B.safetensors")
    kinds = {str(k).lower(): (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in backbones.items()}
    check_variants(variants, {k: len(v) for k, v in kinds.items()})
    return kinds


def _load_backbones(kinds: dict[str, list], variants: list[str], device: torch.device) -> dict[Key, Backbone]:
    needed = sorted({m for v in variants for m in variant_members(v)})
    loaded = {(k, i): load_backbone(kinds[k][i], k, i, device) for k, i in needed}
    check_backbones(list(loaded.values()))
    return loaded


def _load_targets(targets: Sequence[Any], loaded: dict[Key, Backbone]) -> list[Target]:
    """Every target read and checked against the backbones, ordered by resolution."""
    tgts = []
    for t in targets:
        if isinstance(t, Target) or (isinstance(t, tuple) and len(t) == 3):
            tgts.append(load_target(t))
        else:
            src, size = (t if isinstance(t, (tuple, list)) else (t, None))
            tgts.append(load_target(src, size))
    for t in tgts:
        check_target(t, list(loaded.values()))
    tgts.sort(key=lambda t: (t.resolution, t.name))
    return tgts


def _features(loaded: dict[Key, Backbone], t: Target, device: torch.device, show_progress: bool) -> tuple[dict, dict]:
    """Each backbone's penultimate features of the target's train and test images (the linear probe's)."""
    train, test = {}, {}
    for key, b in loaded.items():
        train[key] = compute_features(b.model, t.train, device=device, show_progress=show_progress, desc=f"features {b.kind}{b.index} {t.label}")
        test[key] = compute_features(b.model, t.test, device=device)
    return train, test


def _run_linear(feats: tuple[dict, dict], members: list[Key], t: Target, s: int, fs: FitSettings) -> tuple[float, float]:
    """(train, test) accuracy of a new head fitted on the members' concatenated features."""
    ftr = torch.cat([feats[0][m] for m in members], 1)
    fte = torch.cat([feats[1][m] for m in members], 1)
    head = new_head(ftr.shape[1], t.train.num_classes, s)
    fit_linear_head(head, ftr, t.train.labels, epochs=fs.epochs, lr=fs.lr, batch_size=fs.batch_size, weight_decay=fs.weight_decay,
                    seed=s, standardize=fs.standardize)
    with torch.no_grad():
        tr_acc = float((head(ftr).argmax(1) == t.train.labels).float().mean())
        te_acc = float((head(fte).argmax(1) == t.test.labels).float().mean())
    return tr_acc, te_acc


def _run_finetune(loaded: dict[Key, Backbone], members: list[Key], t: Target, s: int, fs: FitSettings,
                  device: torch.device) -> tuple[float, float]:
    """(train, test) accuracy of a fused model of copies of the members, fine-tuned end to end."""
    parts = [copy.deepcopy(loaded[m].model) for m in members]
    model = LateFusion(parts[0], parts[1] if len(parts) > 1 else None, t.train.num_classes).to(device)
    model.fc = new_head(model.num_features, t.train.num_classes, s).to(device)
    fit_finetune(model, t, epochs=fs.epochs, lr=fs.lr, batch_size=fs.batch_size, weight_decay=fs.weight_decay, seed=s, device=device,
                 show_progress=fs.show_progress)
    model.eval()
    return (accuracy(model, t.train.float(), t.train.labels, device=device),
            accuracy(model, t.test.float(), t.test.labels, device=device))


def _fit_all(loaded: dict[Key, Backbone], tgts: list[Target], variants: list[str], repeats: int, seed: int, fs: FitSettings,
             device: torch.device) -> list[RunResult]:
    """Every (target, variant, repeat) run, in that order; repeat r uses seed ``seed + r``."""
    jobs = [(t, v, r) for t in tgts for v in variants for r in range(repeats)]
    runs: list[RunResult] = []
    feats: tuple[dict[Key, Tensor], dict[Key, Tensor]] = ({}, {})
    current = None
    for t, v, r in track(jobs, "fusion", enabled=fs.show_progress):
        if fs.mode == "linear" and t is not current:
            feats, current = _features(loaded, t, device, fs.show_progress), t
        s, t0 = seed + r, time.time()
        members = variant_members(v)
        if fs.mode == "linear":
            tr_acc, te_acc = _run_linear(feats, members, t, s, fs)
        else:
            tr_acc, te_acc = _run_finetune(loaded, members, t, s, fs, device)
        runs.append(RunResult(v, t.name, t.resolution, r, s, te_acc, tr_acc, time.time() - t0))
    return runs


def summarise(runs: Sequence[RunResult], variants: Sequence[str], targets: Sequence[Target]) -> list[dict]:
    """One row per (variant, data set, resolution): mean and population std of test accuracy."""
    rows = []
    for t in targets:
        for v in variants:
            accs = [r.test_accuracy for r in runs if r.variant == v and r.dataset == t.name and r.resolution == t.resolution]
            if not accs:
                continue
            a = torch.tensor(accs, dtype=torch.float64)
            rows.append({"variant": v, "dataset": t.name, "resolution": t.resolution, "mean": float(a.mean()),
                         "std": float(a.std(unbiased=False)), "repeats": len(accs), "accuracies": accs})
    return rows


def _config(fs: FitSettings, repeats: int, seed: int, variants: list[str], loaded: dict[Key, Backbone], tgts: list[Target],
            device: torch.device) -> dict:
    return {
        "mode": fs.mode, "epochs": fs.epochs, "lr": fs.lr, "momentum": 0.9, "batch_size": fs.batch_size,
        "weight_decay": fs.weight_decay, "standardize": fs.standardize if fs.mode == "linear" else None,
        "repeats": repeats, "seed": seed, "variants": variants,
        "backbones": {f"{k}{i}": {"kind": b.kind, "source": b.source, "arch": getattr(b.model, "arch", ""), "num_features": int(b.model.num_features)}
                      for (k, i), b in loaded.items()},
        "targets": [{"name": t.name, "source": t.source, "resolution": t.resolution, "n_train": len(t.train), "n_test": len(t.test),
                     "classes": t.train.num_classes} for t in tgts],
        "device": str(device),
    }


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
    fs = _settings(mode, repeats, epochs, lr, batch_size, weight_decay, standardize, show_progress)
    variants = parse_variants(variants)
    kinds = _backbone_entries(backbones, variants)
    if targets is None or len(targets) == 0:
        raise UserError("--target: no target data set given; expected e.g. --target trifeature:size=32")
    loaded = _load_backbones(kinds, variants, device)
    tgts = _load_targets(targets, loaded)
    runs = _fit_all(loaded, tgts, variants, repeats, seed, fs, device)
    table = summarise(runs, variants, tgts)
    result = {"config": _config(fs, repeats, seed, variants, loaded, tgts, device), "runs": [r.__dict__ for r in runs],
              "table": table, "pattern": paper_pattern(table), "seconds": time.time() - t_start, "versions": versions()}
    if out_dir is not None:
        write_outputs(result, out_dir)
    return result
