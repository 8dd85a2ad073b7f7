"""One training loop for standard and adversarial training, readable top to bottom.

In the spirit of fast_adversarial's ``train_fgsm.py`` and Keller Jordan's airbench: no
callback framework; :func:`train` reads as a list of steps: resolve the hyper-parameters
(:class:`~robustlens.train.config.TrainConfig`), build the loader, the model's forwards, the
optimiser and the schedule, resume, then for each epoch run the epoch, check it, checkpoint.
Each optimiser step is :func:`robustlens.train.step.sgd_step` (the inner maximisation on
input gradients, then one SGD step; Madry et al. 2018, Eq. 2.1), the step the transfer and
fusion fits share.

After every epoch a PGD check on a fixed held-out batch watches for catastrophic overfitting
(Wong et al. 2020; Andriushchenko & Flammarion 2020): :func:`co_reason` applies the rules of
:class:`~robustlens.train.config.TrainConfig` (a relative drop, a floor, an absolute drop);
a flagged epoch is said on the console and in the metrics, and ``co_remedy`` acts on it: by
default (fgsm, fgsm-rs) the remaining epochs train with PGD-k from the best weights so far,
the switch being part of the resumable state. The best epoch by check accuracy (PGD for
adversarial modes) is kept in ``best.safetensors`` and, with ``keep_best``, in the model.

Reproducibility and resume: the data order comes from ``(seed, epoch)`` (the loader), the
random starts from a generator re-seeded from ``(seed, rank, step)`` at every step, the
learning rate is a pure function of the step; so the training state is the model, the
optimiser buffers, the step and the metric sums so far. It is written atomically to
``state.safetensors`` (:mod:`robustlens.train.state`) at every epoch end and every
``save_every`` steps; a resumed run ends with bit-identical weights on CPU.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from robustlens.attacks.pgd import pgd
from robustlens.data.base import ImageSet
from robustlens.data.loader import TensorLoader
from robustlens.errors import UserError
from robustlens.evalmode import eval_mode
from robustlens.io import versions, write_json_atomic
from robustlens.progress import Progress
from robustlens.threat import ThreatModel, make_threat
from robustlens.train import distributed
from robustlens.train.config import TrainConfig, config_differences, data_kind
from robustlens.train.distributed import DistInfo
from robustlens.train.schedule import Schedule
from robustlens.train.state import (
    STATE_FORMAT,
    load_state,
    restore,
    run_key,
    save_model,
    save_state,
    tensorboard,
    write_metrics,
)
from robustlens.train.step import EpochMeter, Nets, Recipe, autocast, sgd_step

__all__ = ["TrainResult", "make_optimizer", "save_model", "train"]


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a run did: per-epoch metrics, the best epoch, catastrophic overfitting, files."""

    config: TrainConfig
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    best_epoch: int | None = None
    best_metric: float | None = None
    catastrophic_overfitting: list[int] = field(default_factory=list)
    co_fallback: int | None = None
    selected_epoch: int | None = None
    not_robust: str | None = None
    stopped_early: bool = False
    resumed_from: dict | None = None
    out_dir: Path | None = None

    @property
    def final(self) -> dict:
        """Metrics of the last epoch run (empty if none)."""
        return self.history[-1] if self.history else {}

    @property
    def checkpoint(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "last.safetensors"

    @property
    def best_checkpoint(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "best.safetensors"

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "history": self.history,
            "steps": self.steps,
            "seconds": self.seconds,
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "catastrophic_overfitting": self.catastrophic_overfitting,
            "co_fallback": self.co_fallback,
            "selected_epoch": self.selected_epoch,
            "not_robust": self.not_robust,
            "stopped_early": self.stopped_early,
            "resumed_from": self.resumed_from,
            "out_dir": self.out_dir,
        }


# --------------------------------------------------------------------------------------
# Data: a held-out check batch and a deterministic loader
# --------------------------------------------------------------------------------------


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix64 finaliser), for per-(seed, epoch, step) generators."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h & 0x7FFFFFFFFFFFFFFF


class _CropLoader(TensorLoader):
    """:class:`TensorLoader` with the random crop but no flip (digits, text: a mirrored symbol is
    another one). It draws the same random numbers, so the crops equal a flipping loader's."""

    def augmentation(self, e: int, b: int, n: int) -> tuple[Tensor, Tensor]:
        offsets, flips = super().augmentation(e, b, n)
        return offsets, torch.zeros_like(flips)


def _make_loader(images: ImageSet, batch_size: int, cfg: TrainConfig, device: torch.device, info: DistInfo) -> TensorLoader:
    """Full batches only (drop_last); under DDP each rank takes a disjoint shard of every epoch."""
    cls = TensorLoader if cfg.flip or not cfg.augment else _CropLoader
    return cls(images, batch_size=batch_size, shuffle=True, seed=cfg.seed, augment=bool(cfg.augment), device=device,
               drop_last=True, distributed=(info.rank, info.world) if info.enabled else None)


def _split_check(train_set: ImageSet, val_set: ImageSet | None, cfg: TrainConfig) -> tuple[ImageSet, ImageSet | None]:
    """The training images and the fixed check set for the per-epoch PGD check.

    With ``val_set`` the check uses ``check_size`` of its images (a seeded random choice: files
    are often sorted by class); otherwise ``min(check_size, N // 10)`` training images, chosen
    by ``seed``, are held out.
    """
    if cfg.check_size == 0:
        return train_set, None
    if val_set is not None:
        pick = torch.randperm(len(val_set), generator=torch.Generator().manual_seed(_mix(cfg.seed, 0x7A1)))
        return train_set, val_set.subset(pick[: cfg.check_size].sort().values)
    k = min(cfg.check_size, len(train_set) // 10)
    if k == 0:
        return train_set, None
    perm = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(_mix(cfg.seed, 0x5EED)))
    return train_set.subset(perm[k:].sort().values), train_set.subset(perm[:k].sort().values)


def _pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, steps: int, seed: int, batch: int, amp: bool) -> tuple[float, float]:
    """(clean, PGD-``steps``) accuracy on ``(x, y)``, model in eval mode, fixed random start:
    :func:`robustlens.attacks.pgd` with step 2.5 eps / k (Madry et al. 2018)."""
    step = 2.5 * threat.eps / steps
    gen = torch.Generator(x.device).manual_seed(_mix(seed, 0xC0C0))
    clean = robust = 0
    with eval_mode(model):
        for i in range(0, len(y), batch):
            xb, yb = x[i : i + batch], y[i : i + batch]
            with torch.no_grad(), autocast(x.device, amp):
                clean += int((model(xb).argmax(1) == yb).sum())
            xa = pgd(model, xb, yb, threat, steps=steps, step_size=step, generator=gen)
            with torch.no_grad(), autocast(x.device, amp):
                robust += int((model(xa).argmax(1) == yb).sum())
    return clean / len(y), robust / len(y)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay; optionally no decay on biases and norm parameters."""
    if cfg.no_decay_bn_bias:
        decay, no_decay = [], []
        for p in model.parameters():
            if p.requires_grad:
                (no_decay if p.dim() <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def eps_label(eps: float) -> str:
    """``8/255`` when eps is a whole number of 255ths, else ``0.3``: the console's eps label."""
    k = eps * 255
    return f"{round(k)}/255" if eps > 0 and abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def co_reason(cfg: TrainConfig, metrics: dict, history: list[dict], best_epoch: int | None,
              best: float | None, chance: float) -> str | None:
    """Why epoch ``metrics["epoch"]`` shows catastrophic overfitting, or ``None``.

    The rules of :class:`TrainConfig` (Wong et al. 2020, Sec. 5; Andriushchenko & Flammarion
    2020, Sec. 3), from epoch 2 on and for adversarial modes: check PGD below ``co_ratio`` of
    the best so far (by ``co_min_drop`` at least) while the training accuracy is no lower than
    at the best epoch (within ``co_min_drop``); from epoch 3 on, below ``co_floor`` x chance
    while the training accuracy exceeds twice chance; or more than ``co_threshold`` below the
    best. ``history`` holds the epochs before this one.
    """
    crit = metrics.get("check_robust_accuracy")
    if not cfg.adversarial or crit is None or metrics["epoch"] < 2:
        return None
    acc = metrics["train_accuracy"]
    if best is not None and best_epoch is not None:
        best_acc = history[best_epoch - 1]["train_accuracy"]
        if crit < cfg.co_ratio * best and best - crit >= cfg.co_min_drop and acc >= best_acc - cfg.co_min_drop:
            return (f"PGD accuracy {crit:.3f} < {cfg.co_ratio:g} x the best {best:.3f} (epoch {best_epoch}) "
                    f"while the training accuracy rose ({best_acc:.3f} -> {acc:.3f})")
        if best - crit > cfg.co_threshold:
            return f"PGD accuracy {crit:.3f} fell by more than {cfg.co_threshold:g} from {best:.3f} (epoch {best_epoch})"
    if metrics["epoch"] >= 3 and crit < cfg.co_floor * chance and acc > 2 * chance:
        return (f"PGD accuracy {crit:.3f} below {cfg.co_floor:g} x chance ({chance:.3f}) while the training accuracy "
                f"is {acc:.3f}")
    return None


# --------------------------------------------------------------------------------------
# A run: what stays fixed, and where it stands
# --------------------------------------------------------------------------------------


@dataclass
class _Run:
    """Everything fixed for one run: the resolved config, the process, the data, the model's
    forwards, the optimiser, the schedule, the step recipe and the files."""

    cfg: TrainConfig
    info: DistInfo
    device: torch.device
    out: Path | None
    train_set: ImageSet
    train_part: ImageSet
    loader: TensorLoader
    per_rank: int
    check: tuple[Tensor, Tensor] | None
    check_threat: ThreatModel
    nets: Nets
    opt: torch.optim.Optimizer
    sched: Schedule
    recipe: Recipe
    adv_gen: torch.Generator
    key: dict
    state_path: Path | None = None
    writer: object | None = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    @property
    def main(self) -> bool:
        return self.info.is_main

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (rank 0, with an output folder)."""
        return self.main and self.out is not None

    def say(self, msg: str) -> None:
        if self.cfg.log and self.main:
            print(msg, file=sys.stderr, flush=True)

    def state_meta(self, result: TrainResult, epoch: int, batch: int, partial: list | None, epoch_seconds: float) -> dict:
        return {
            "format": STATE_FORMAT, "run": self.key, "epoch": epoch, "batch": batch,
            "step": epoch * self.steps_per_epoch + batch,
            "partial": partial, "epoch_seconds": epoch_seconds,
            "history": result.history, "best_epoch": result.best_epoch, "best_metric": result.best_metric,
            "co_epochs": result.catastrophic_overfitting, "co_fallback": result.co_fallback, "stopped_early": result.stopped_early,
            "versions": versions(),
        }

    def checkpoint_meta(self, metrics: dict) -> dict:
        return {"classes": list(self.train_set.classes), "training": self.cfg.to_dict(), "metrics": metrics,
                "seed": self.cfg.seed, "data": self.train_set.name, "epoch": metrics.get("epoch")}

    def non_finite(self, step: int) -> UserError:
        spe = self.steps_per_epoch
        last = f"; the last good state is {self.state_path}" if self.state_path is not None and self.state_path.exists() else ""
        return UserError(f"training loss became non-finite at step {step} (epoch {step // spe + 1}, "
                         f"batch {step % spe + 1}); stopped{last}. Try a lower --lr")


@dataclass
class _Position:
    """Where training continues: epoch, batch, a part-finished epoch's sums and seconds, best weights."""

    epoch: int = 0
    batch: int = 0
    partial: list | None = None
    epoch_seconds: float = 0.0
    best_weights: dict | None = None


# --------------------------------------------------------------------------------------
# The steps of a run
# --------------------------------------------------------------------------------------


def _data(train_set: ImageSet, val_set: ImageSet | None, cfg: TrainConfig, device: torch.device, info: DistInfo):
    """(training part, its loader, images per rank and batch, check batch or None)."""
    train_part, check_set = _split_check(train_set, val_set, cfg)
    per_rank = cfg.batch_size // info.world
    if per_rank < 1 or per_rank * info.world != cfg.batch_size:
        raise UserError(f"--batch-size {cfg.batch_size}: must be a multiple of the {info.world} processes")
    if cfg.batch_size > len(train_part):
        held = f" ({len(train_set) - len(train_part)} held out for the PGD check)" if len(train_part) < len(train_set) else ""
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the training set ({len(train_part)} images{held})")
    loader = _make_loader(train_part, per_rank, cfg, device, info)
    if len(loader) == 0:
        raise UserError(f"--batch-size {cfg.batch_size}: no full batch per process in {len(train_part)} images")
    check = None
    if check_set is not None:
        check_x, check_y = check_set.float(device=device), check_set.labels.to(device)
        if cfg.channels_last:
            check_x = check_x.contiguous(memory_format=torch.channels_last)
        check = (check_x, check_y)
    return train_part, loader, per_rank, check


def _nets(model: nn.Module, cfg: TrainConfig, device: torch.device, info: DistInfo) -> Nets:
    """The model on ``device`` and its forwards: attacks never go through DDP; compiled if asked."""
    model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    attack_net = torch.compile(model) if cfg.compile else model
    train_net = distributed.wrap(model, info, device)
    if cfg.compile and info.enabled:
        train_net = torch.compile(train_net)
    elif cfg.compile:
        train_net = attack_net
    return Nets(train=train_net, attack=attack_net, clean=attack_net if info.enabled else train_net, raw=model)


def _recipe(cfg: TrainConfig, fallback: bool = False) -> Recipe:
    """The step of ``cfg``; ``fallback``: PGD-``attack_steps`` with step 2.5 eps / k (Madry et
    al. 2018), what training switches to after catastrophic overfitting (``co_remedy`` pgd)."""
    threat = make_threat(cfg.threat, cfg.eps) if cfg.adversarial else None
    mode, step = ("pgd", 2.5 * cfg.eps / cfg.attack_steps) if fallback else (cfg.mode, cfg.step_size)
    return Recipe(mode=mode, threat=threat, step_size=step, attack_steps=cfg.attack_steps, adv_fraction=cfg.adv_fraction,
                  trades_beta=cfg.trades_beta, label_smoothing=cfg.label_smoothing, amp=cfg.amp, grad_align=cfg.grad_align)


def _prepare(model: nn.Module, train_set: ImageSet, config: TrainConfig | None, out_dir, val_set: ImageSet | None,
             device: str | torch.device | None) -> _Run:
    """Hyper-parameters, process, data, model, optimiser, schedule: everything a run fixes."""
    from robustlens.cli_common import resolve_device

    cfg0 = config or TrainConfig()
    device = device if isinstance(device, torch.device) else resolve_device(device)
    info = distributed.setup(device)
    device = distributed.device_for(info, device)
    cfg = cfg0.resolve(cfg0.kind or data_kind(train_set.name, train_set.resolution, train_set.channels), device.type,
                       channels=train_set.channels, n_train=len(train_set))
    if cfg.grad_align and info.enabled:
        raise UserError("--grad-align: GradAlign's double backward runs in one process only (not under torchrun)")
    if train_set.num_classes < 2:
        raise UserError(f"{train_set.name or 'the training set'}: {train_set.num_classes} class "
                        f"({', '.join(map(str, train_set.classes))}); training a classifier needs at least 2 classes")
    n_classes = getattr(model, "num_classes", None)
    if n_classes is not None and n_classes != train_set.num_classes:
        raise UserError(f"model has {n_classes} outputs but {train_set.name or 'the training set'} has {train_set.num_classes} classes")
    train_part, loader, per_rank, check = _data(train_set, val_set, cfg, device, info)
    nets = _nets(model, cfg, device, info)
    opt = make_optimizer(model, cfg)
    sched = Schedule(cfg.schedule, cfg.lr, cfg.epochs, len(loader), cfg.milestones, cfg.gamma, cfg.peak_at)
    return _Run(cfg=cfg, info=info, device=device, out=Path(out_dir) if out_dir is not None else None, train_set=train_set,
                train_part=train_part, loader=loader, per_rank=per_rank, check=check,
                check_threat=make_threat(cfg.threat, cfg.check_eps), nets=nets, opt=opt, sched=sched, recipe=_recipe(cfg),
                adv_gen=torch.Generator(device=device), key=run_key(cfg, model, train_part, info))


def _resume(run: _Run, result: TrainResult, resume: bool | str | Path) -> _Position:
    """Where to start: ``resume`` continues a saved state (same run key) when there is one."""
    run.state_path = (Path(resume) if isinstance(resume, (str, Path)) and not isinstance(resume, bool)
                      else (run.out / "state.safetensors" if run.out is not None else None))
    pos = _Position()
    if resume and run.state_path is None:
        raise UserError("--resume: needs --out (the folder of the run to continue)")
    if resume and run.state_path.exists():
        tensors, meta = load_state(run.state_path)
        diffs = config_differences(meta["run"], run.key)
        if diffs:
            raise UserError(f"--resume: {run.state_path} is from another run; differing fields: {'; '.join(diffs)}")
        pos.best_weights = restore(tensors, meta, run.nets.raw, run.opt)
        pos.epoch, pos.batch = meta["epoch"], meta["batch"]
        pos.partial = meta.get("partial")
        pos.epoch_seconds = meta.get("epoch_seconds", 0.0)
        result.history = meta["history"]
        result.best_epoch, result.best_metric = meta.get("best_epoch"), meta.get("best_metric")
        result.catastrophic_overfitting = meta.get("co_epochs", [])
        result.co_fallback = meta.get("co_fallback")
        result.stopped_early = meta.get("stopped_early", False)
        result.resumed_from = {"epoch": pos.epoch, "batch": pos.batch, "step": meta["step"]}
        run.say(f"resuming {run.state_path} at epoch {pos.epoch + 1}, batch {pos.batch} (step {meta['step']})")
    elif resume:
        run.say(f"--resume: no training state at {run.state_path}; starting from scratch")
    if result.stopped_early:
        pos.epoch = run.cfg.epochs
    return pos


def _open_logs(run: _Run) -> None:
    """TensorBoard (if asked), ``train_config.json`` and the run's first log line."""
    cfg = run.cfg
    run.writer = tensorboard(run.out, cfg.tensorboard) if run.main else None
    if run.writes:
        write_json_atomic(run.out / "train_config.json", {"run": run.key, "versions": versions()})
    run.say(f"training {run.key['arch']} on {run.train_part.name} ({len(run.train_part)} images, {run.steps_per_epoch} steps/epoch), "
            f"mode {cfg.mode}" + (f" eps {eps_label(cfg.eps)} step {cfg.step_size:.4g}" if cfg.adversarial else "")
            + f", {cfg.epochs} epochs, {cfg.schedule} lr {cfg.lr:g}, augmentation {cfg.augmentation()}, "
            f"check PGD-{cfg.check_steps} at eps {eps_label(cfg.check_eps)}, device {run.device}")


def _check_finite(run: _Run, step_loss: Tensor, epoch: int, b: int, step: int) -> None:
    """Every ``finite_every`` steps (each step on a single CPU), at the epoch end and before a
    save: a non-finite loss on any rank stops the run, naming the first bad step."""
    cfg = run.cfg
    finite_every = 1 if (run.device.type == "cpu" and not run.info.enabled) else 25
    if (b + 1) % finite_every == 0 or b + 1 == run.steps_per_epoch or (cfg.save_every and (step + 1) % cfg.save_every == 0):
        bad = (~torch.isfinite(step_loss[: b + 1])).float()
        if run.info.enabled:
            bad = distributed.all_sum(bad, run.info)
        if bool(bad.any()):
            raise run.non_finite(epoch * run.steps_per_epoch + int(bad.nonzero()[0]))


def _train_epoch(run: _Run, result: TrainResult, pos: _Position, epoch: int) -> dict:
    """One epoch of :func:`sgd_step` from batch ``pos.batch`` on; returns the epoch's metrics."""
    cfg, spe = run.cfg, run.steps_per_epoch
    run.nets.raw.train()
    meter = EpochMeter(run.device, pos.partial if pos.partial is not None and pos.batch > 0 else None)
    step_loss = torch.full((spe,), float("nan"), device=run.device)
    step_loss[: pos.batch] = 0.0
    bar = Progress(f"epoch {epoch + 1}/{cfg.epochs}", spe * run.per_rank, initial=pos.batch * run.per_rank,
                   enabled=cfg.progress and run.main)
    t_epoch = time.perf_counter()
    lr = run.sched(epoch * spe + pos.batch)
    for b, (x, y) in enumerate(run.loader.epoch(epoch, start=pos.batch), start=pos.batch):
        step = epoch * spe + b
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lr = run.sched(step)
        run.adv_gen.manual_seed(_mix(cfg.seed, run.info.rank, step))
        out = sgd_step(run.nets, run.opt, x, y, run.recipe, lr=lr, generator=run.adv_gen)
        step_loss[b] = out.loss
        meter.add(out, y, run.recipe.mode)
        _check_finite(run, step_loss, epoch, b, step)
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and b + 1 < spe and run.writes:
            save_state(run.state_path, run.nets.raw, run.opt, pos.best_weights,
                       run.state_meta(result, epoch, b + 1, meter.state(), pos.epoch_seconds + time.perf_counter() - t_epoch))
        bar.update(len(y), step=f"batch {b + 1}/{spe}")
    bar.close()
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    seconds = pos.epoch_seconds + time.perf_counter() - t_epoch
    pos.epoch_seconds, pos.batch, pos.partial = 0.0, 0, None
    tot = distributed.all_sum(torch.cat([meter.sums, torch.tensor(meter.counts, dtype=torch.float64, device=run.device)]), run.info).tolist()
    loss_sum, correct, adv_correct, clean_correct, n_seen, n_seen_adv, n_seen_clean = tot
    return {
        "epoch": epoch + 1, "step": (epoch + 1) * spe, "mode": run.recipe.mode,
        "loss": loss_sum / n_seen, "train_accuracy": correct / n_seen,
        "train_adv_accuracy": adv_correct / n_seen_adv if n_seen_adv else None,
        "train_clean_accuracy": clean_correct / n_seen_clean if n_seen_clean else None,
        "lr": lr, "seconds": seconds, "images_per_s": n_seen / seconds if seconds > 0 else None,
    }


def _check_epoch(run: _Run, result: TrainResult, pos: _Position, metrics: dict) -> bool:
    """The PGD check, best epoch and catastrophic overfitting (:func:`co_reason`) with its
    remedy (``co_remedy``); True if the check accuracy improved."""
    cfg, epoch = run.cfg, metrics["epoch"]
    if run.check is not None:
        t_check = time.perf_counter()
        clean_acc, robust_acc = _pgd_accuracy(run.nets.attack, *run.check, run.check_threat, cfg.check_steps,
                                              cfg.seed, max(run.per_rank, 64), cfg.amp)
        metrics.update(check_clean_accuracy=clean_acc, check_robust_accuracy=robust_acc,
                       check_eps=cfg.check_eps, check_seconds=time.perf_counter() - t_check)
    crit = metrics.get("check_robust_accuracy" if cfg.adversarial else "check_clean_accuracy")
    improved = crit is not None and (result.best_metric is None or crit > result.best_metric)
    reason = co_reason(cfg, metrics, result.history, result.best_epoch, result.best_metric, 1 / run.train_set.num_classes)
    co = distributed.broadcast_flag(reason is not None, run.info, run.device)
    metrics["catastrophic_overfitting"] = co
    metrics["co_reason"] = reason
    if improved:
        result.best_epoch, result.best_metric = epoch, crit
        pos.best_weights = {k: v.detach().clone() for k, v in run.nets.raw.state_dict().items()}
    if co:
        result.catastrophic_overfitting.append(epoch)
        action = {"stop": "; stopping early and keeping the best weights", "none": ""}.get(cfg.co_remedy, "")
        if cfg.co_remedy == "pgd" and result.co_fallback is None and epoch < cfg.epochs:
            result.co_fallback = epoch
            action = (f"; the remaining {cfg.epochs - epoch} epochs train with PGD-{cfg.attack_steps} "
                      f"from the best weights (epoch {result.best_epoch})")
        run.say(f"CATASTROPHIC OVERFITTING at epoch {epoch} ({run.recipe.mode}): {reason}{action}")
        if cfg.co_remedy == "stop":
            result.stopped_early = True
    result.history.append(metrics)
    return improved


def _switch_to_pgd(run: _Run, result: TrainResult, pos: _Position, epoch: int) -> None:
    """The PGD fallback (``co_remedy`` pgd): from epoch index ``result.co_fallback`` on the step
    is PGD-k; at that epoch's first batch the best weights come back and the momentum restarts
    (a resumed run does the same at the same point, so resume stays bit-identical)."""
    if result.co_fallback is None or epoch < result.co_fallback or run.recipe.mode == "pgd":
        return
    run.recipe = _recipe(run.cfg, fallback=True)
    if epoch == result.co_fallback and pos.batch == 0 and pos.best_weights is not None:
        run.nets.raw.load_state_dict(pos.best_weights)
        run.opt.state.clear()


def _log_and_save(run: _Run, result: TrainResult, pos: _Position, metrics: dict, improved: bool) -> None:
    """The epoch's log line and TensorBoard scalars; checkpoints, state and metrics.jsonl."""
    run.say(f"epoch {metrics['epoch']}/{run.cfg.epochs}  loss {metrics['loss']:.4f}  acc {metrics['train_accuracy']:.3f}"
            f"  check clean {_fmt(metrics.get('check_clean_accuracy'))}"
            f" pgd@{eps_label(run.cfg.check_eps)} {_fmt(metrics.get('check_robust_accuracy'))}"
            f"  lr {metrics['lr']:.4g}  {metrics['seconds']:.1f} s  {_fmt(metrics['images_per_s'], '.0f')} img/s")
    if run.writer is not None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step"):
                run.writer.add_scalar(f"train/{k}", v, metrics["epoch"])
        run.writer.flush()
    if run.writes:
        raw = run.nets.raw
        save_model(run.out / "last.safetensors", raw, run.checkpoint_meta(metrics))
        if improved:
            save_model(run.out / "best.safetensors", raw, run.checkpoint_meta(metrics))
        save_state(run.state_path, raw, run.opt, pos.best_weights, run.state_meta(result, metrics["epoch"], 0, None, 0.0))
        write_metrics(run.out / "metrics.jsonl", result.history)


def _finish(run: _Run, result: TrainResult, pos: _Position, t_run: float) -> TrainResult:
    """The best weights (after an early stop, or with ``keep_best``), eval mode, logs closed, processes joined."""
    result.selected_epoch = len(result.history) or None
    if (result.stopped_early or run.cfg.keep_best) and pos.best_weights is not None and result.best_epoch is not None:
        run.nets.raw.load_state_dict(pos.best_weights)
        result.selected_epoch = result.best_epoch
        if result.best_epoch != len(result.history):
            run.say(f"keeping epoch {result.best_epoch}'s weights (best check accuracy {result.best_metric:.3f})")
    chance = 1 / run.train_set.num_classes
    if run.cfg.adversarial and result.best_metric is not None and result.best_metric <= chance:
        result.not_robust = (f"the best check PGD accuracy at eps {eps_label(run.cfg.check_eps)}, {result.best_metric:.3f} "
                             f"(epoch {result.best_epoch}), is not above chance ({chance:.3f}): the model is not robust")
        run.say(f"WARNING: {result.not_robust}")
    run.nets.raw.eval()
    if run.writer is not None:
        run.writer.close()
    distributed.barrier(run.info)
    distributed.cleanup(run.info)
    result.steps = len(result.history) * run.steps_per_epoch
    result.seconds = time.perf_counter() - t_run
    return result


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


def train(
    model: nn.Module,
    train_set: ImageSet,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    val_set: ImageSet | None = None,
    resume: bool | str | Path = False,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_set`` (standard or adversarial, see :class:`TrainConfig`).

    Writes to ``out_dir`` (when given): ``last.safetensors`` and ``best.safetensors`` (model
    checkpoints with JSON sidecars), ``state.safetensors`` (+ ``state.json``) for
    ``resume``, ``metrics.jsonl`` (one line per epoch) and TensorBoard logs if asked.
    ``resume=True`` continues from ``out_dir/state.safetensors`` when it exists (a path
    names another state file). The model is trained in place and left in eval mode; after
    an early stop for catastrophic overfitting, or with ``keep_best`` (adversarial modes),
    it holds the best epoch's weights (``result.selected_epoch``).
    """
    t_run = time.perf_counter()
    run = _prepare(model, train_set, config, out_dir, val_set, device)
    result = TrainResult(config=run.cfg, out_dir=run.out)
    pos = _resume(run, result, resume)
    _open_logs(run)
    for epoch in range(pos.epoch, run.cfg.epochs):
        _switch_to_pgd(run, result, pos, epoch)
        metrics = _train_epoch(run, result, pos, epoch)
        improved = _check_epoch(run, result, pos, metrics)
        _log_and_save(run, result, pos, metrics, improved)
        if result.stopped_early:
            break
    return _finish(run, result, pos, t_run)
