"""Training configuration: one dataclass, per-data-set defaults, validation.

Every field left at ``None`` is filled from a small table keyed by the kind of data
(:data:`DEFAULTS`): the embedded procedural set (``trifeature``), CIFAR-like 32x32 natural
images (``cifar``: the fast-AT recipe of Wong et al. 2020) and larger ImageNet-like images
(``imagenet``: the main paper's recipe, SGD lr 0.1, batch 256, x0.1 every 30 of 90 epochs).
:meth:`TrainConfig.resolve` returns the fully specified config that is stored with every
checkpoint and compared on ``--resume``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields

from robustlens.errors import UserError
from robustlens.threat import make_threat, parse_eps

MODES: dict[str, str] = {
    "std": "standard training (cross-entropy on clean images)",
    "fgsm": "FGSM adversarial training from a zero start, step eps (main paper; Goodfellow et al. 2015)",
    "fgsm-rs": "FGSM with a uniform random start, step 1.25 eps, projected (Wong et al. 2020, fast AT)",
    "pgd": "PGD-k adversarial training, random start, step 2.5 eps / k (Madry et al. 2018)",
    "trades": "TRADES: CE(clean) + beta * KL(clean || adversarial), adversary maximises the KL (Zhang et al. 2019)",
}
ADVERSARIAL_MODES = ("fgsm", "fgsm-rs", "pgd", "trades")
SCHEDULES: dict[str, str] = {
    "step": "lr x gamma at each milestone epoch (main paper: x0.1 every 30 of 90 epochs)",
    "cyclic": "linear 0 -> lr at 2/5 of training -> 0, per step (fast AT; alias onecycle)",
    "cosine": "half-cosine from lr to 0, per step",
    "constant": "lr throughout",
}
_SCHEDULE_ALIASES = {"onecycle": "cyclic", "one-cycle": "cyclic", "triangle": "cyclic", "multistep": "step"}

# Defaults per kind of data. ``batch_size_cuda`` replaces ``batch_size`` on a GPU.
DEFAULTS: dict[str, dict] = {
    # Embedded procedural set (32x32, small_cnn): tuned so that on 2 CPU cores STD and
    # FGSM-RS each train in about a minute (see benchmarks/BENCHMARKS.md, "Training").
    "trifeature": dict(epochs=5, batch_size=128, lr=0.1, schedule="cyclic", augment=False),
    # CIFAR-10 / PreActResNet-18, fast AT (Wong et al. 2020, fast_adversarial's train_fgsm.py).
    "cifar": dict(epochs=15, batch_size=128, batch_size_cuda=512, lr=0.2, schedule="cyclic", augment=True),
    # ImageNet-like: the main paper (Itazuri et al.), as Madry's robustness library.
    "imagenet": dict(epochs=90, batch_size=256, lr=0.1, schedule="step", augment=True),
}

# Fields that only change logging / bookkeeping, not the trajectory; ignored by resume checks.
_BOOKKEEPING = ("progress", "tensorboard", "save_every", "log")


def data_kind(name: str, resolution: tuple[int, int]) -> str:
    """The key of :data:`DEFAULTS` for a data set called ``name`` at ``resolution``."""
    if "trifeature" in name.lower():
        return "trifeature"
    return "cifar" if max(resolution) <= 40 else "imagenet"


def normalize_mode(mode: str) -> str:
    key = str(mode).lower().replace("_", "-")
    key = {"standard": "std", "fgsmrs": "fgsm-rs", "fast": "fgsm-rs", "madry": "pgd"}.get(key, key)
    if key not in MODES:
        raise UserError(f"--mode: unknown training mode {mode!r}; expected one of {', '.join(MODES)}")
    return key


def normalize_schedule(name: str) -> str:
    key = _SCHEDULE_ALIASES.get(str(name).lower(), str(name).lower())
    if key not in SCHEDULES:
        raise UserError(f"--schedule: unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)} (or onecycle)")
    return key


@dataclass
class TrainConfig:
    """Everything that decides a training run. ``None`` means "the per-data-set default".

    Adversarial modes (see :data:`MODES`): ``step_size`` is absolute (pixels in [0, 1]);
    ``None`` gives each paper's default: eps (FGSM), 1.25 eps (FGSM-RS, Wong et al. 2020,
    Alg. 3), 2.5 eps / k (PGD-k, Madry et al. 2018; TRADES). ``adv_fraction`` < 1 trains on a
    batch whose first ``ceil(fraction * B)`` examples are adversarial and the rest clean
    (Goodfellow et al. 2015, Eq. 2 mixes the clean and adversarial losses 50/50).

    Catastrophic overfitting (FGSM, FGSM-RS): after every epoch a PGD-``check_steps``
    attack runs on a fixed held-out batch of ``check_size`` images; a drop of more than
    ``co_threshold`` below the best robust accuracy so far is logged, and stops training
    (restoring the best weights) when ``early_stop`` is on, as fast_adversarial's
    ``--early-stop`` does.
    """

    mode: str = "std"
    threat: str = "linf"
    eps: float | str | None = None
    step_size: float | str | None = None
    attack_steps: int = 10
    trades_beta: float = 6.0
    adv_fraction: float = 1.0
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    schedule: str | None = None
    milestones: tuple[int, ...] | None = None
    gamma: float = 0.1
    peak_at: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    no_decay_bn_bias: bool = False
    nesterov: bool = False
    label_smoothing: float = 0.0
    augment: bool | None = None
    seed: int = 0
    check_size: int = 256
    check_steps: int = 10
    check_eps: float | str | None = None
    co_threshold: float = 0.2
    early_stop: bool | None = None
    channels_last: bool | None = None
    amp: bool | None = None
    compile: bool = False
    save_every: int = 0
    tensorboard: bool = False
    progress: bool = True
    log: bool = True
    kind: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def adversarial(self) -> bool:
        return normalize_mode(self.mode) in ADVERSARIAL_MODES

    def resolve(self, kind: str, device_type: str = "cpu") -> "TrainConfig":
        """A copy with every ``None`` filled in and every value checked (``UserError`` if bad)."""
        c = dataclasses.replace(self, extra=dict(self.extra))
        c.mode = normalize_mode(c.mode)
        c.kind = c.kind or kind
        if c.kind not in DEFAULTS:
            raise UserError(f"kind: unknown data kind {c.kind!r}; expected one of {', '.join(DEFAULTS)}")
        d = DEFAULTS[c.kind]
        if c.epochs is None:
            c.epochs = d["epochs"]
        if c.batch_size is None:
            c.batch_size = d.get("batch_size_cuda", d["batch_size"]) if device_type == "cuda" else d["batch_size"]
        if c.lr is None:
            c.lr = d["lr"]
        c.schedule = normalize_schedule(c.schedule or d["schedule"])
        if c.augment is None:
            c.augment = d["augment"]
        if c.schedule == "step" and c.milestones is None:
            c.milestones = (c.epochs // 3, 2 * c.epochs // 3) if c.epochs >= 3 else ()
        c.milestones = tuple(int(m) for m in (c.milestones or ()))
        # Threat model and eps.
        c.threat = make_threat(c.threat, 0).norm
        if c.adversarial:
            eps = 8 / 255 if c.eps is None else parse_eps(c.eps)
            if eps == 0:
                raise UserError(f"--eps: mode {c.mode!r} is adversarial and needs eps > 0 (e.g. --eps 8/255)")
            make_threat(c.threat, eps)  # range check (L-inf eps <= 1)
            c.eps = eps
            if c.step_size is None:
                k = c.attack_steps
                c.step_size = {"fgsm": eps, "fgsm-rs": 1.25 * eps, "pgd": 2.5 * eps / k, "trades": 2.5 * eps / k}[c.mode]
            else:
                c.step_size = parse_eps(c.step_size, name="--step-size")
        else:
            eps = 0.0 if c.eps is None else parse_eps(c.eps)
            if eps != 0:
                raise UserError(f"--eps {eps:g} given but --mode std is not adversarial; pick one of {', '.join(ADVERSARIAL_MODES)} or drop --eps")
            if c.step_size is not None:
                raise UserError("--step-size given but --mode std is not adversarial")
            c.eps, c.step_size = 0.0, 0.0
        # The per-epoch PGD check runs at the training eps (8/255 for STD, to show how brittle it is).
        c.check_eps = parse_eps(c.check_eps, name="--check-eps") if c.check_eps is not None else (c.eps or 8 / 255)
        if c.early_stop is None:
            c.early_stop = c.mode in ("fgsm", "fgsm-rs")
        if c.amp is None:
            c.amp = device_type == "cuda"
        if c.channels_last is None:
            # Faster on CUDA, and on this CPU (DESIGN: -28% small CNN, -11% PreActResNet-18).
            c.channels_last = True
        c._check()
        return c

    def _check(self) -> None:
        def pos_int(name: str, v, zero_ok: bool = False) -> None:
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if zero_ok else 1):
                raise UserError(f"--{name.replace('_', '-')}: expected a {'non-negative' if zero_ok else 'positive'} integer, got {v!r}")

        def pos_float(name: str, v, zero_ok: bool = True) -> None:
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (v == 0 and not zero_ok):
                raise UserError(f"--{name.replace('_', '-')}: expected a finite number >= 0, got {v!r}")

        pos_int("epochs", self.epochs)
        pos_int("batch_size", self.batch_size)
        pos_int("attack_steps", self.attack_steps)
        pos_int("check_size", self.check_size, zero_ok=True)
        pos_int("check_steps", self.check_steps)
        pos_int("save_every", self.save_every, zero_ok=True)
        pos_float("lr", self.lr, zero_ok=False)
        for name in ("weight_decay", "momentum", "gamma", "trades_beta", "label_smoothing", "co_threshold"):
            pos_float(name, getattr(self, name))
        if not 0 < self.peak_at < 1:
            raise UserError(f"--peak-at: expected a fraction in (0, 1), got {self.peak_at!r}")
        if not 0 < self.adv_fraction <= 1:
            raise UserError(f"--adv-fraction: expected a fraction in (0, 1], got {self.adv_fraction!r}")
        if self.mode == "trades" and self.adv_fraction != 1:
            raise UserError("--adv-fraction: TRADES already mixes clean and adversarial terms; leave it at 1")
        if self.label_smoothing >= 1:
            raise UserError(f"--label-smoothing: expected a value in [0, 1), got {self.label_smoothing}")
        if self.momentum >= 1:
            raise UserError(f"--momentum: expected a value in [0, 1), got {self.momentum}")
        bad = [m for m in self.milestones or () if not 0 < m < self.epochs]
        if bad:
            raise UserError(f"--milestones: expected epochs between 1 and {self.epochs - 1}, got {list(bad)}")

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["milestones"] = list(out["milestones"]) if out["milestones"] is not None else None
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"training config: unknown fields {unknown}; known: {sorted(names)}")
        d = dict(d)
        if d.get("milestones") is not None:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)


def config_differences(saved: dict, current: dict) -> list[str]:
    """Fields (other than bookkeeping) whose values differ, as ``name: saved -> current``."""
    out = []
    for key in sorted(set(saved) | set(current)):
        if key in _BOOKKEEPING:
            continue
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-12, abs_tol=0):
            continue
        if a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out
