"""One training loop for standard and adversarial training, readable top to bottom.

In the spirit of fast_adversarial's ``train_fgsm.py`` and Keller Jordan's airbench: no
callback framework, one function (:func:`train`) that reads as the algorithm does.

Per step (Madry et al. 2018, Eq. 2.1: ``min_theta E max_{delta in S} L(theta, x + delta, y)``):

1. the inner maximisation builds ``x_adv`` with gradients taken w.r.t. the *input only*
   (``torch.autograd.grad(loss, x_adv)``), so no weight gradients are computed for the
   attack; FGSM-RS then costs about two standard steps (DESIGN: 1.85x small CNN) instead of
   ~2.2x when ``loss.backward()`` is used as in fast_adversarial;
2. the outer minimisation is one SGD step on the adversarial (or mixed) batch.

Modes: ``std``; ``fgsm`` (zero start, step eps: the main paper's ADV); ``fgsm-rs`` (uniform
random start, step 1.25 eps, projection: Wong et al. 2020, Alg. 3); ``pgd`` (k steps of
2.5 eps / k from a random start: Madry et al. 2018); ``trades`` (Zhang et al. 2019, Eq. 5:
``CE(f(x), y) + beta * KL(f(x) || f(x'))``, ``x'`` maximising the KL by PGD-k from
``x + 0.001 N(0, 1)``, model in eval mode during the attack as in the authors' code).

Reproducibility and resume: the data order comes from ``(seed, epoch)`` (the loader), the
random starts from a generator re-seeded from ``(seed, rank, step)`` at every step, the
learning rate is a pure function of the step; so the training state is the model, the
optimiser buffers, the step and the metric sums so far. It is written atomically to
``state.safetensors`` (one file: tensors + JSON metadata) at every epoch end and every
``save_every`` steps; a resumed run ends with bit-identical weights on CPU.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlens.data.base import ImageSet
from robustlens.errors import UserError
from robustlens.io import atomic_path, versions, write_json_atomic
from robustlens.threat import ThreatModel, make_threat
from robustlens.train import distributed
from robustlens.train.config import TrainConfig, config_differences, data_kind
from robustlens.train.distributed import DistInfo
from robustlens.train.schedule import Schedule

STATE_FORMAT = "robustlens-train-state/1"
FGSM_MODES = ("fgsm", "fgsm-rs")


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


def _crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random crop with zero padding ``pad`` and random horizontal flip, vectorised."""
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(x.device)
    flip = torch.rand(n, generator=generator, device=generator.device).to(x.device) < 0.5
    rows = oy[:, None] + torch.arange(h, device=x.device)
    cols = ox[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device)[:, None, None, None]
    idx_c = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]


class _ShardedBatches:
    """Deterministic batches from an :class:`ImageSet` held on ``device``.

    Used when ``robustlens.data.loader.TensorLoader`` is missing or cannot shard across
    ranks. Epoch ``e`` is a permutation drawn from ``(seed, e)``; ``epoch(e, start=k)``
    skips the first ``k`` batches (resume); under DDP each rank takes a disjoint shard
    (:func:`robustlens.train.distributed.shard`). Augmentation draws from ``(seed, e, b)``.
    """

    def __init__(self, images: ImageSet, batch_size: int, seed: int, augment: bool, device: torch.device, info: DistInfo) -> None:
        self.images = images.images.to(device)
        self.labels = images.labels.to(device)
        self.batch_size, self.seed, self.augment, self.device, self.info = batch_size, seed, augment, device, info

    def __len__(self) -> int:
        return len(self.labels) // (self.batch_size * self.info.world)

    def epoch(self, e: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(_mix(self.seed, e))
        perm = distributed.shard(torch.randperm(len(self.labels), generator=g), self.batch_size, self.info).to(self.device)
        for b in range(start, len(self)):
            idx = perm[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[idx].float().div_(255.0)
            if self.augment:
                x = _crop_flip(x, torch.Generator(self.device).manual_seed(_mix(self.seed, e, b, 1)))
            yield x, self.labels[idx]


def _make_loader(images: ImageSet, batch_size: int, cfg: TrainConfig, device: torch.device, info: DistInfo):
    """The data helper's TensorLoader (drop_last, sharded when it supports it), else ours."""
    try:
        from robustlens.data.loader import TensorLoader
    except ImportError:
        return _ShardedBatches(images, batch_size, cfg.seed, bool(cfg.augment), device, info)
    import inspect

    params = inspect.signature(TensorLoader).parameters
    if info.enabled and "distributed" not in params:
        return _ShardedBatches(images, batch_size, cfg.seed, bool(cfg.augment), device, info)
    kw = dict(batch_size=batch_size, shuffle=True, seed=cfg.seed, augment=bool(cfg.augment), device=device, drop_last=True)
    if info.enabled:
        kw["distributed"] = (info.rank, info.world)
    return TensorLoader(images, **kw)


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


# --------------------------------------------------------------------------------------
# The inner maximisation (input gradients only)
# --------------------------------------------------------------------------------------


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def perturb(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    mode: str,
    threat: ThreatModel,
    step_size: float,
    steps: int,
    generator: torch.Generator | None = None,
    amp: bool = False,
) -> tuple[Tensor, Tensor]:
    """Adversarial examples for training, and the logits of the attack's first forward.

    ``fgsm``: ``x + step * dir(grad L(x))`` (Goodfellow et al. 2015), start at ``x`` itself, so
    the first logits are the clean ones. ``fgsm-rs``: start uniform in the ball, one step,
    project (Wong et al. 2020). ``pgd``: ``steps`` projected steps from a random start
    (Madry et al. 2018). The model's train/eval mode is left as it is.
    """
    x_adv = x.clone() if mode == "fgsm" else threat.random_init(x, generator)
    n_steps = 1 if mode in FGSM_MODES else steps
    first = None
    for _ in range(n_steps):
        x_adv.requires_grad_(True)
        with _autocast(x.device, amp):
            logits = model(x_adv)
            loss = F.cross_entropy(logits.float(), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        if first is None:
            first = logits.detach()
        x_adv = threat.project(threat.ascent_step(x_adv.detach(), grad, step_size), x)
    return x_adv.detach(), first


def perturb_trades(
    model: nn.Module,
    x: Tensor,
    threat: ThreatModel,
    step_size: float,
    steps: int,
    generator: torch.Generator | None = None,
    amp: bool = False,
) -> Tensor:
    """TRADES' inner maximisation: ``argmax_{x' in ball} KL(f(x) || f(x'))`` by PGD-k.

    Zhang et al. 2019, Alg. 1 / the authors' ``trades.py``: start at ``x + 0.001 N(0, I)``,
    sign steps on ``KL(softmax f(x) || softmax f(x'))`` (sum reduction), projected.
    """
    with torch.no_grad(), _autocast(x.device, amp):
        p_clean = F.softmax(model(x).float(), dim=1)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_adv = threat.project(x + 0.001 * noise, x)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with _autocast(x.device, amp):
            log_q = F.log_softmax(model(x_adv).float(), dim=1)
        loss = F.kl_div(log_q, p_clean, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = threat.project(threat.ascent_step(x_adv.detach(), grad, step_size), x)
    return x_adv.detach()


def _pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, steps: int, seed: int, batch: int, amp: bool) -> tuple[float, float]:
    """(clean, PGD-``steps``) accuracy on ``(x, y)``, model in eval mode, fixed random start.

    Uses ``robustlens.attacks.pgd`` when it exists, else :func:`perturb` in ``pgd`` mode
    (the same algorithm: step 2.5 eps / k, uniform random start, cross-entropy).
    """
    try:
        from robustlens.attacks import pgd as attack_pgd
    except ImportError:
        attack_pgd = None
    step = 2.5 * threat.eps / steps
    gen = torch.Generator(x.device).manual_seed(_mix(seed, 0xC0C0))
    was_training = model.training
    model.eval()
    clean = robust = 0
    try:
        for i in range(0, len(y), batch):
            xb, yb = x[i : i + batch], y[i : i + batch]
            with torch.no_grad(), _autocast(x.device, amp):
                clean += int((model(xb).argmax(1) == yb).sum())
            if attack_pgd is not None and callable(attack_pgd):
                xa = attack_pgd(model, xb, yb, threat, steps=steps, step_size=step, generator=gen)
            else:
                xa, _ = perturb(model, xb, yb, "pgd", threat, step, steps, gen, amp)
            with torch.no_grad(), _autocast(x.device, amp):
                robust += int((model(xa).argmax(1) == yb).sum())
    finally:
        model.train(was_training)
    return clean / len(y), robust / len(y)


# --------------------------------------------------------------------------------------
# Optimiser, checkpoints, training state
# --------------------------------------------------------------------------------------


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


def _cpu_tensors(prefix: str, sd: dict) -> dict[str, Tensor]:
    return {f"{prefix}{k}": v.detach().to("cpu").contiguous() for k, v in sd.items() if isinstance(v, Tensor)}


def save_model(path: Path, model: nn.Module, meta: dict) -> None:
    """A model checkpoint (safetensors + JSON sidecar) through the models helper when present."""
    from robustlens.models import ImageClassifier, available

    try:
        from robustlens.models.checkpoint import save_checkpoint
    except ImportError:
        save_checkpoint = None
    if save_checkpoint is not None and isinstance(model, ImageClassifier) and model.arch in available():
        save_checkpoint(path, model, meta)
        return
    # Models outside the zoo (e.g. a late-fusion pair): weights + a plain sidecar.
    from safetensors.torch import save_file

    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(_cpu_tensors("", model.state_dict()), str(tmp))
    sidecar = {
        "arch": getattr(model, "arch", type(model).__name__),
        "num_classes": getattr(model, "num_classes", None),
        "normalize": model.normalize.to_dict() if hasattr(model, "normalize") else None,
        **meta,
        "versions": versions(),
    }
    write_json_atomic(path.with_suffix(".json"), sidecar)


def _save_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, best_weights: dict | None, meta: dict) -> None:
    """Everything a resume needs, in one atomically written safetensors file."""
    from safetensors.torch import save_file

    tensors = _cpu_tensors("model.", model.state_dict())
    if best_weights is not None:
        tensors.update(_cpu_tensors("best.", best_weights))
    osd = opt.state_dict()
    for idx, st in osd["state"].items():
        tensors.update(_cpu_tensors(f"opt.{idx}.", {k: v for k, v in st.items() if isinstance(v, Tensor)}))
    tensors["rng.torch"] = torch.get_rng_state()
    meta = dict(meta, param_groups=osd["param_groups"],
                opt_scalars={str(i): {k: v for k, v in st.items() if not isinstance(v, Tensor)} for i, st in osd["state"].items()})
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)})
    write_json_atomic(path.with_suffix(".json"), {k: v for k, v in meta.items() if k not in ("param_groups", "opt_scalars")})


def _load_state(path: Path) -> tuple[dict[str, Tensor], dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("state", "{}"))
        tensors = load_file(str(path))
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable robustlens training state ({e})") from None
    if meta.get("format") != STATE_FORMAT:
        raise UserError(f"{path}: not a robustlens training state (format {meta.get('format')!r}, expected {STATE_FORMAT!r})")
    return tensors, meta


def _restore(tensors: dict[str, Tensor], meta: dict, model: nn.Module, opt: torch.optim.Optimizer) -> dict | None:
    """Load model and optimiser state; returns the best weights if the state holds them."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, scalars in meta.get("opt_scalars", {}).items():
        state.setdefault(int(idx), {}).update(scalars)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    # Keep each buffer in its parameter's memory format (channels_last), as in an unbroken run.
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                if isinstance(v, Tensor) and v.shape == p.shape:
                    opt.state[p][k] = torch.empty_like(p).copy_(v)
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    return best or None


def _run_key(cfg: TrainConfig, model: nn.Module, train_part: ImageSet, info: DistInfo) -> dict:
    """What must match for a resume: the resolved config, the model and the data."""
    key = cfg.to_dict()
    key.pop("extra", None)
    key.update(
        arch=getattr(model, "arch", type(model).__name__),
        num_classes=int(getattr(model, "num_classes", 0) or 0),
        parameters=int(sum(p.numel() for p in model.parameters())),
        data=train_part.name,
        n_train=len(train_part),
        resolution=list(train_part.resolution),
        world_size=info.world,
    )
    return json.loads(json.dumps(key, default=str))


def _tensorboard(out: Path | None, enabled: bool):
    if not enabled:
        return None
    if out is None:
        raise UserError("--tensorboard: needs an output folder (--out) to write the logs to")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard: the tensorboard package is not installed (pip install tensorboard)") from None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _write_metrics(path: Path, history: list[dict]) -> None:
    """metrics.jsonl, rewritten atomically from the history (consistent with the state after a kill)."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in history))


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


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
    an early stop for catastrophic overfitting it holds the best weights.
    """
    from robustlens.cli_common import resolve_device

    t_run = time.perf_counter()
    cfg0 = config or TrainConfig()
    device = device if isinstance(device, torch.device) else resolve_device(device)
    info = distributed.setup(device)
    device = distributed.device_for(info, device)
    cfg = cfg0.resolve(cfg0.kind or data_kind(train_set.name, train_set.resolution), device.type)
    out = Path(out_dir) if out_dir is not None else None
    main = info.is_main
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if (cfg.log and main) else (lambda msg: None)

    n_classes = getattr(model, "num_classes", None)
    if n_classes is not None and n_classes != train_set.num_classes:
        raise UserError(f"model has {n_classes} outputs but {train_set.name or 'the training set'} has {train_set.num_classes} classes")

    # ---- data: held-out check batch + training batches ---------------------------------------
    train_part, check_set = _split_check(train_set, val_set, cfg)
    per_rank = cfg.batch_size // info.world
    if per_rank < 1 or per_rank * info.world != cfg.batch_size:
        raise UserError(f"--batch-size {cfg.batch_size}: must be a multiple of the {info.world} processes")
    if cfg.batch_size > len(train_part):
        held = f" ({len(train_set) - len(train_part)} held out for the PGD check)" if len(train_part) < len(train_set) else ""
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the training set ({len(train_part)} images{held})")
    loader = _make_loader(train_part, per_rank, cfg, device, info)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise UserError(f"--batch-size {cfg.batch_size}: no full batch per process in {len(train_part)} images")
    check_x = check_y = None
    if check_set is not None:
        check_x, check_y = check_set.float(device=device), check_set.labels.to(device)
        if cfg.channels_last:
            check_x = check_x.contiguous(memory_format=torch.channels_last)

    # ---- model, optimiser, schedule, threat model ----------------------------------------------
    model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    raw = model
    attack_net = torch.compile(raw) if cfg.compile else raw  # attacks never go through DDP
    train_net = distributed.wrap(raw, info, device)
    if cfg.compile and info.enabled:
        train_net = torch.compile(train_net)
    elif cfg.compile:
        train_net = attack_net
    opt = make_optimizer(raw, cfg)
    sched = Schedule(cfg.schedule, cfg.lr, cfg.epochs, steps_per_epoch, cfg.milestones, cfg.gamma, cfg.peak_at)
    threat = make_threat(cfg.threat, cfg.eps) if cfg.adversarial else None
    check_threat = make_threat(cfg.threat, cfg.check_eps)
    adv_gen = torch.Generator(device=device)
    n_adv = math.ceil(cfg.adv_fraction * per_rank)
    crit_key = "check_robust_accuracy" if cfg.adversarial else "check_clean_accuracy"

    # ---- resume -------------------------------------------------------------------------------
    run_key = _run_key(cfg, raw, train_part, info)
    state_path = (Path(resume) if isinstance(resume, (str, Path)) and not isinstance(resume, bool)
                  else (out / "state.safetensors" if out is not None else None))
    result = TrainResult(config=cfg, out_dir=out)
    start_epoch, start_batch, partial, epoch_seconds_before = 0, 0, None, 0.0
    best_weights: dict | None = None
    if resume and state_path is None:
        raise UserError("--resume: needs --out (the folder of the run to continue)")
    if resume and state_path is not None and state_path.exists():
        tensors, meta = _load_state(state_path)
        diffs = config_differences(meta["run"], run_key)
        if diffs:
            raise UserError(f"--resume: {state_path} is from another run; differing fields: {'; '.join(diffs)}")
        best_weights = _restore(tensors, meta, raw, opt)
        start_epoch, start_batch = meta["epoch"], meta["batch"]
        partial = meta.get("partial")
        epoch_seconds_before = meta.get("epoch_seconds", 0.0)
        result.history = meta["history"]
        result.best_epoch, result.best_metric = meta.get("best_epoch"), meta.get("best_metric")
        result.catastrophic_overfitting = meta.get("co_epochs", [])
        result.stopped_early = meta.get("stopped_early", False)
        result.resumed_from = {"epoch": start_epoch, "batch": start_batch, "step": meta["step"]}
        say(f"resuming {state_path} at epoch {start_epoch + 1}, batch {start_batch} (step {meta['step']})")
    elif resume and state_path is not None:
        say(f"--resume: no training state at {state_path}; starting from scratch")
    if result.stopped_early:
        start_epoch = cfg.epochs

    def state_meta(epoch: int, batch: int, partial: list | None, epoch_seconds: float) -> dict:
        return {
            "format": STATE_FORMAT, "run": run_key, "epoch": epoch, "batch": batch,
            "step": epoch * steps_per_epoch + batch,
            "partial": partial, "epoch_seconds": epoch_seconds,
            "history": result.history, "best_epoch": result.best_epoch, "best_metric": result.best_metric,
            "co_epochs": result.catastrophic_overfitting, "stopped_early": result.stopped_early,
            "versions": versions(),
        }

    def checkpoint_meta(metrics: dict) -> dict:
        return {"classes": list(train_set.classes), "training": cfg.to_dict(), "metrics": metrics,
                "seed": cfg.seed, "data": train_set.name, "epoch": metrics.get("epoch")}

    def non_finite(step: int) -> UserError:
        last = f"; the last good state is {state_path}" if state_path is not None and state_path.exists() else ""
        return UserError(f"training loss became non-finite at step {step} (epoch {step // steps_per_epoch + 1}, "
                         f"batch {step % steps_per_epoch + 1}); stopped{last}. Try a lower --lr")

    writer = _tensorboard(out, cfg.tensorboard) if main else None
    if main and out is not None:
        write_json_atomic(out / "train_config.json", {"run": run_key, "versions": versions()})
    say(f"training {run_key['arch']} on {train_part.name} ({len(train_part)} images, {steps_per_epoch} steps/epoch), "
        f"mode {cfg.mode}" + (f" eps {cfg.eps:.5g}" if cfg.adversarial else "") + f", {cfg.epochs} epochs, device {device}")
    finite_every = 1 if (device.type == "cpu" and not info.enabled) else 25

    # ---- epochs -------------------------------------------------------------------------------
    from tqdm import tqdm

    for epoch in range(start_epoch, cfg.epochs):
        raw.train()
        # Metric sums on the device (no sync per step): loss * n, correct, adversarial correct, clean
        # correct; and the matching counts n, n adversarial, n clean as Python integers.
        sums = torch.zeros(4, dtype=torch.float64, device=device)
        counts = [0, 0, 0]
        if partial is not None and start_batch > 0:
            sums = torch.tensor(partial[:4], dtype=torch.float64, device=device)
            counts = [int(c) for c in partial[4:]]
        partial = None
        step_loss = torch.full((steps_per_epoch,), float("nan"), device=device)
        step_loss[:start_batch] = 0.0
        bar = tqdm(total=steps_per_epoch, initial=start_batch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (cfg.progress and main and sys.stderr.isatty()))
        t_epoch = time.perf_counter()
        lr = sched(epoch * steps_per_epoch + start_batch)
        for b, (x, y) in enumerate(loader.epoch(epoch, start=start_batch), start=start_batch):
            step = epoch * steps_per_epoch + b
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = sched(step)
            for group in opt.param_groups:
                group["lr"] = lr

            # Inner maximisation: adversarial examples from input gradients only.
            adv_gen.manual_seed(_mix(cfg.seed, info.rank, step))
            clean_logits = None
            if cfg.mode == "std":
                x_train = x
            elif cfg.mode == "trades":
                raw.eval()
                x_train = perturb_trades(attack_net, x, threat, cfg.step_size, cfg.attack_steps, adv_gen, cfg.amp)
                raw.train()
            else:
                x_adv, first = perturb(attack_net, x[:n_adv], y[:n_adv], cfg.mode, threat, cfg.step_size,
                                       cfg.attack_steps, adv_gen, cfg.amp)
                if cfg.mode == "fgsm":
                    clean_logits = first  # FGSM starts at x: its first forward is on the clean images
                x_train = torch.cat([x_adv, x[n_adv:]]) if n_adv < len(x) else x_adv

            # Outer minimisation: one SGD step.
            with _autocast(device, cfg.amp):
                logits = train_net(x_train)
                if cfg.mode == "trades":
                    clean_logits = attack_net(x) if info.enabled else train_net(x)
                    kl = F.kl_div(F.log_softmax(logits.float(), 1), F.softmax(clean_logits.float(), 1), reduction="batchmean")
                    loss = F.cross_entropy(clean_logits.float(), y, label_smoothing=cfg.label_smoothing) + cfg.trades_beta * kl
                else:
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

            # Bookkeeping, on the device.
            with torch.no_grad():
                step_loss[b] = loss.detach()
                hit = (logits.argmax(1) == y).double()
                adv_part = hit if cfg.mode == "trades" else hit[:n_adv]
                clean_hits = hit[n_adv:]
                if clean_logits is not None:  # FGSM's first forward (its clean part) or TRADES' clean logits
                    first_hits = (clean_logits.argmax(1) == y[: len(clean_logits)]).double()
                    clean_hits = first_hits if cfg.mode == "trades" else torch.cat([first_hits, clean_hits])
                if cfg.mode == "std":
                    clean_hits, adv_part = hit, hit[:0]
                sums += torch.stack([loss.detach().double() * len(y), hit.sum(), adv_part.sum(), clean_hits.sum()])
                counts = [counts[0] + len(y), counts[1] + len(adv_part), counts[2] + len(clean_hits)]
            if (b + 1) % finite_every == 0 or b + 1 == steps_per_epoch or (cfg.save_every and (step + 1) % cfg.save_every == 0):
                bad = (~torch.isfinite(step_loss[: b + 1])).float()
                if info.enabled:
                    bad = distributed.all_sum(bad, info)
                if bool(bad.any()):
                    raise non_finite(epoch * steps_per_epoch + int(bad.nonzero()[0]))
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and b + 1 < steps_per_epoch and main and out is not None:
                _save_state(state_path, raw, opt, best_weights,
                            state_meta(epoch, b + 1, sums.tolist() + counts, epoch_seconds_before + time.perf_counter() - t_epoch))
            bar.update(1)
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = epoch_seconds_before + time.perf_counter() - t_epoch
        epoch_seconds_before, start_batch = 0.0, 0

        # End of epoch: metrics, PGD check (catastrophic overfitting), checkpoints.
        tot = distributed.all_sum(torch.cat([sums, torch.tensor(counts, dtype=torch.float64, device=device)]), info).tolist()
        loss_sum, correct, adv_correct, clean_correct, n_seen, n_seen_adv, n_seen_clean = tot
        metrics = {
            "epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "mode": cfg.mode,
            "loss": loss_sum / n_seen, "train_accuracy": correct / n_seen,
            "train_adv_accuracy": adv_correct / n_seen_adv if n_seen_adv else None,
            "train_clean_accuracy": clean_correct / n_seen_clean if n_seen_clean else None,
            "lr": lr, "seconds": seconds, "images_per_s": n_seen / seconds if seconds > 0 else None,
        }
        if check_x is not None:
            t_check = time.perf_counter()
            clean_acc, robust_acc = _pgd_accuracy(attack_net, check_x, check_y, check_threat, cfg.check_steps,
                                                  cfg.seed, max(per_rank, 64), cfg.amp)
            metrics.update(check_clean_accuracy=clean_acc, check_robust_accuracy=robust_acc,
                           check_eps=cfg.check_eps, check_seconds=time.perf_counter() - t_check)
        crit = metrics.get(crit_key)
        improved = crit is not None and (result.best_metric is None or crit > result.best_metric)
        co = bool(cfg.adversarial and crit is not None and result.best_metric is not None
                  and result.best_metric - crit > cfg.co_threshold)
        co = distributed.broadcast_flag(co, info, device)
        metrics["catastrophic_overfitting"] = co
        if improved:
            result.best_epoch, result.best_metric = epoch + 1, crit
            best_weights = {k: v.detach().clone() for k, v in raw.state_dict().items()}
        if co:
            result.catastrophic_overfitting.append(epoch + 1)
            say(f"catastrophic overfitting at epoch {epoch + 1}: PGD-{cfg.check_steps} accuracy on the check set fell to "
                f"{crit:.3f} from {result.best_metric:.3f} (epoch {result.best_epoch})"
                + ("; stopping early and keeping the best weights" if cfg.early_stop else ""))
            if cfg.early_stop:
                result.stopped_early = True
        result.history.append(metrics)
        say(f"epoch {epoch + 1}/{cfg.epochs}  loss {metrics['loss']:.4f}  acc {metrics['train_accuracy']:.3f}"
            f"  check clean {_fmt(metrics.get('check_clean_accuracy'))} pgd {_fmt(metrics.get('check_robust_accuracy'))}"
            f"  lr {lr:.4g}  {seconds:.1f} s  {_fmt(metrics['images_per_s'], '.0f')} img/s")
        if writer is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step"):
                    writer.add_scalar(f"train/{k}", v, epoch + 1)
            writer.flush()
        if main and out is not None:
            save_model(out / "last.safetensors", raw, checkpoint_meta(metrics))
            if improved:
                save_model(out / "best.safetensors", raw, checkpoint_meta(metrics))
            _save_state(state_path, raw, opt, best_weights, state_meta(epoch + 1, 0, None, 0.0))
            _write_metrics(out / "metrics.jsonl", result.history)
        if result.stopped_early:
            break

    # ---- done -----------------------------------------------------------------------------------
    if result.stopped_early and best_weights is not None:
        raw.load_state_dict(best_weights)
    raw.eval()
    if writer is not None:
        writer.close()
    distributed.barrier(info)
    distributed.cleanup(info)
    result.steps = len(result.history) * steps_per_epoch
    result.seconds = time.perf_counter() - t_run
    return result


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy (for side-by-side runs from the same initial weights)."""
    return copy.deepcopy(model)
