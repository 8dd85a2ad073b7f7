"""Training configuration: one dataclass, per-data-set defaults, validation.

Every field left at ``None`` is filled from a small table keyed by the kind of data
(:data:`DEFAULTS`): the embedded procedural set (``trifeature``), CIFAR-like 32x32 natural
images (``cifar``: the fast-AT recipe of Wong et al. 2020) and larger ImageNet-like images
(``imagenet``: the main paper's recipe, SGD lr 0.1, batch 256, x0.1 every 30 of 90 epochs)
and small single-channel images (``digits``: MNIST-like digits or text, no flip, no crop).
:meth:`TrainConfig.resolve` returns the fully specified config that is stored with every
checkpoint and compared on ``--resume``.

How the recipe depends on the radius and the data's size (README, "Training recipes"):

* augmentation: crop (pad 4) + horizontal flip for natural images (``cifar``, ``imagenet``);
  nothing for ``digits`` and ``trifeature``; a flip is never a default for 1-channel data
  (a mirrored digit or letter is another symbol); ``flip = False`` keeps the crop only.
* FGSM-RS step: 1.25 eps at every radius, as Wong et al. 2020 (Alg. 3; their MNIST runs at
  eps 0.3 use alpha 0.375). At a large radius single-step training often overfits
  catastrophically (their Sec. 5; Andriushchenko & Flammarion 2020, Sec. 3); the loop detects
  it and by default trains the remaining epochs with PGD-k (:data:`CO_REMEDIES`). A smaller
  step (``step_size``) and GradAlign (``grad_align``) are the opt-in remedies. (A step of
  1.0 eps measured no better on the strokes set at eps 0.3, so it is not a default.)
* epochs: the kind's default, raised for a small data set so that a run makes at least the
  kind's ``min_steps`` optimiser steps (``digits``), capped at ``max_epochs``.
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
CO_REMEDIES: dict[str, str] = {
    "pgd": "switch to PGD-k (attack_steps, step 2.5 eps / k; Madry et al. 2018) for the remaining epochs, "
           "from the best weights (the default for fgsm / fgsm-rs)",
    "stop": "stop training and keep the best weights (fast_adversarial's --early-stop; Wong et al. 2020)",
    "none": "log it only",
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
    # Small single-channel images (MNIST-like digits, text): no crop, no flip, as Wong et al.
    # 2020's MNIST runs (fast_adversarial MNIST/train_mnist.py: 10 epochs, cyclic lr); SGD here,
    # with at least ``min_steps`` steps on a small set (benchmarks/DIGITS.md).
    "digits": dict(epochs=10, batch_size=128, lr=0.05, schedule="cyclic", augment=False, min_steps=800, max_epochs=40),
}

# Fields that only change logging / bookkeeping, not the trajectory; ignored by resume checks.
_BOOKKEEPING = ("progress", "tensorboard", "save_every", "log")


def data_kind(name: str, resolution: tuple[int, int], channels: int = 3) -> str:
    """The key of :data:`DEFAULTS` for a data set called ``name`` at ``resolution`` with
    ``channels`` channels (1-channel images of 40 px or less are ``digits``)."""
    if channels == 1 and max(resolution) <= 40:
        return "digits"
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

    Augmentation: ``augment`` turns on the random crop (pad 4) and ``flip`` the horizontal
    flip within it (``None``: the kind's default; never a flip for 1-channel data).

    Catastrophic overfitting (adversarial modes): after every epoch a PGD-``check_steps``
    attack at ``check_eps`` runs on a fixed held-out batch of ``check_size`` images. An epoch
    is flagged (Wong et al. 2020, Sec. 5 and Fig. 3; Andriushchenko & Flammarion 2020, Sec. 3:
    the PGD accuracy collapses within an epoch while the accuracy on the training attack's
    own examples rises) when, from epoch 2 on, any of

    * *relative drop*: check PGD < ``co_ratio`` x the best so far, by at least ``co_min_drop``
      (so that noise on a near-zero accuracy is no collapse), with the training accuracy no
      lower than at the best epoch;
    * *floor* (from epoch 3): check PGD < ``co_floor`` x chance while the training accuracy
      exceeds twice chance (the model fits its own FGSM examples, PGD ones not even by luck);
    * *absolute drop*: the best so far minus check PGD > ``co_threshold``.

    ``co_remedy`` (:data:`CO_REMEDIES`) says what then happens: ``pgd`` (the default for fgsm
    and fgsm-rs) restores the best weights and trains the remaining epochs with PGD-k;
    ``stop`` ends training with the best weights (``early_stop = True`` asks for it too);
    ``none`` logs it. A run whose best check PGD accuracy is not above chance ends with a
    warning (``TrainResult.not_robust``), never silently. ``keep_best`` (default on for adversarial modes) leaves the model with
    the weights of the epoch with the best check accuracy (PGD for adversarial modes; Rice
    et al. 2020 early-stop adversarial training the same way).

    ``grad_align`` > 0 adds GradAlign, ``lambda * E[1 - cos(grad_x L(x), grad_x L(x + eta))]``,
    ``eta ~ U[-eps, eps]^d`` (Andriushchenko & Flammarion 2020, Eq. 5), the regulariser that
    prevents catastrophic overfitting of FGSM training (their lambda 0.2 at eps 8/255 on
    CIFAR-10). A smaller ``step_size`` (alpha) is the third remedy (Wong et al. 2020, Fig. 3).
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
    flip: bool | None = None
    seed: int = 0
    check_size: int = 256
    check_steps: int = 10
    check_eps: float | str | None = None
    co_threshold: float = 0.2
    co_ratio: float = 0.5
    co_min_drop: float = 0.03
    co_floor: float = 1.0
    co_remedy: str | None = None
    keep_best: bool | None = None
    grad_align: float = 0.0
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

    def resolve(self, kind: str, device_type: str = "cpu", *, channels: int = 3, n_train: int | None = None) -> "TrainConfig":
        """A copy with every ``None`` filled in and every value checked (``UserError`` if bad).

        ``channels`` (1: no flip by default) and ``n_train`` (the training images: a small set
        gets more epochs, up to the kind's ``min_steps``) refine the kind's defaults."""
        c = dataclasses.replace(self, extra=dict(self.extra))
        c.mode = normalize_mode(c.mode)
        c.kind = c.kind or kind
        if c.kind not in DEFAULTS:
            raise UserError(f"kind: unknown data kind {c.kind!r}; expected one of {', '.join(DEFAULTS)}")
        d = DEFAULTS[c.kind]
        if c.batch_size is None:
            c.batch_size = d.get("batch_size_cuda", d["batch_size"]) if device_type == "cuda" else d["batch_size"]
        if c.epochs is None:
            c.epochs = _default_epochs(d, c.batch_size, n_train)
        if c.lr is None:
            c.lr = d["lr"]
        c.schedule = normalize_schedule(c.schedule or d["schedule"])
        if c.augment is None:
            c.augment = d["augment"]
        if c.flip is None:
            c.flip = bool(c.augment) and channels != 1 and c.kind != "digits"
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
        c.co_remedy = _co_remedy(c)
        c.early_stop = c.co_remedy == "stop"
        if c.keep_best is None:
            c.keep_best = c.adversarial
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
        for name in ("weight_decay", "momentum", "gamma", "trades_beta", "label_smoothing", "co_threshold",
                     "co_ratio", "co_min_drop", "co_floor", "grad_align"):
            pos_float(name, getattr(self, name))
        if self.grad_align and self.mode not in ("fgsm", "fgsm-rs", "pgd"):
            raise UserError(f"--grad-align: GradAlign regularises FGSM-style training (fgsm, fgsm-rs, pgd), not mode {self.mode!r}")
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

    def augmentation(self) -> str:
        """The augmentation in words, for logs and the report: "crop (pad 4) + flip", "crop (pad 4)" or "none"."""
        if not self.augment:
            return "none"
        return "crop (pad 4) + flip" if self.flip else "crop (pad 4)"

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


def _default_epochs(d: dict, batch_size: int, n_train: int | None) -> int:
    """The kind's epochs, raised so that ``n_train`` images make ``min_steps`` steps (at most ``max_epochs``)."""
    epochs = d["epochs"]
    if n_train and d.get("min_steps"):
        steps = max(n_train // batch_size, 1)
        epochs = min(max(epochs, math.ceil(d["min_steps"] / steps)), d["max_epochs"])
    return epochs


def _co_remedy(c: TrainConfig) -> str:
    """The resolved ``co_remedy``: given, or ``early_stop`` True -> stop / False -> none, else
    pgd for single-step modes (where catastrophic overfitting happens) and none otherwise."""
    if c.co_remedy is not None:
        key = str(c.co_remedy).lower()
        if key not in CO_REMEDIES:
            raise UserError(f"--co-remedy: unknown remedy {c.co_remedy!r}; expected one of {', '.join(CO_REMEDIES)}")
        return key
    if c.early_stop is not None:
        return "stop" if c.early_stop else "none"
    return "pgd" if c.mode in ("fgsm", "fgsm-rs") else "none"


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
