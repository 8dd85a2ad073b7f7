"""Robust accuracy of any ``nn.Module`` taking [0, 1] images, under any attack of the package.

``robust_accuracy(model, data, threat, attack="pgd", ..., **options)`` builds the attack from
:data:`~robustlens.attacks.base.ATTACKS` with ``options`` (or takes a configured
:class:`~robustlens.attacks.base.Attack`), sets the model to eval mode, attacks batch by batch
(only the points classified correctly when clean, as AutoAttack does, so robust accuracy can
never exceed clean accuracy), restores every module's previous train/eval mode, and returns::

    {"clean_accuracy", "robust_accuracy", "per_attack": {name: robust accuracy after it},
     "mean_norm": mean perturbation norm (threat's norm) over the attacked points,
     "mean_norm_fooled": the same over the points the attack fooled,
     "seconds", "n", "attack", "threat", "options", "warnings"}

For ``attack="autoattack"`` ``per_attack`` holds the robust accuracy after each member in
sequence (as AutoAttack prints it); the last one is the worst case.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from robustlens.attacks import checks
from robustlens.attacks._common import check_inputs, fooled
from robustlens.attacks.base import ATTACKS, Attack, make_attack, normalize_attack
from robustlens.data import ImageSet
from robustlens.errors import UserError
from robustlens.evalmode import eval_mode
from robustlens.layout import match_layout
from robustlens.progress import Progress
from robustlens.threat import ThreatModel

__all__ = ["ATTACKS", "eval_mode", "normalize_attack", "robust_accuracy"]


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _as_tensors(data: Any) -> tuple[Tensor, Tensor]:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise UserError("data: expected an ImageSet or a pair of tensors (images, labels)")
        return x, y
    if isinstance(data, ImageSet):
        return data.images, data.labels
    raise UserError(f"data: expected an ImageSet or a pair (images, labels), got {type(data).__name__}")


@dataclass
class _Batches:
    """``images`` and ``labels`` in batches on ``device``, uint8 images scaled to [0, 1], in the
    memory layout of ``model``'s weights (the model itself is never converted)."""

    images: Tensor
    labels: Tensor
    size: int
    device: torch.device
    model: nn.Module  # the batches come in its weights' layout (robustlens.layout.match_layout)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __iter__(self) -> Iterator[tuple[int, Tensor, Tensor]]:
        for i in range(0, len(self), self.size):
            xb = self.images[i : i + self.size].to(self.device)
            xb = xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb
            yield i, match_layout(xb, self.model), self.labels[i : i + self.size].to(self.device)


@dataclass
class _Tally:
    """Counts and norm sums over the batches."""

    n_clean: int = 0
    n_robust: dict[str, int] = field(default_factory=dict)  # after each member, in order
    norm_sum: float = 0.0
    norm_n: int = 0
    norm_fooled_sum: float = 0.0
    norm_fooled_n: int = 0
    flags: list[Tensor] = field(default_factory=list)  # per batch: robust after the last member
    clean_flags: list[Tensor] = field(default_factory=list)  # per batch: correct when clean

    def count_robust(self, after: dict[str, Tensor]) -> None:
        for m, flags in after.items():
            self.n_robust[m] = self.n_robust.get(m, 0) + int(flags.sum())
        self.flags.append(list(after.values())[-1].cpu())

    def add(self, threat: ThreatModel, xb: Tensor, x_adv: Tensor, clean: Tensor, robust: Tensor) -> None:
        self.n_clean += int(clean.sum())
        self.clean_flags.append(clean.cpu())
        attacked = clean.nonzero().squeeze(1)
        if attacked.numel():
            norms = threat.lengths(x_adv[attacked] - xb[attacked])
            self.norm_sum += float(norms.sum())
            self.norm_n += attacked.numel()
            hit_rows = clean & ~robust
            if bool(hit_rows.any()):
                nf = threat.lengths(x_adv[hit_rows] - xb[hit_rows])
                self.norm_fooled_sum += float(nf.sum())
                self.norm_fooled_n += int(hit_rows.sum())

    def last_robust(self) -> int:
        return list(self.n_robust.values())[-1]

    def metrics(self, n: int) -> dict[str, Any]:
        """``n``, the accuracies (robust: after the last member) and the mean norms."""
        return {
            "n": n,
            "clean_accuracy": self.n_clean / n,
            "robust_accuracy": self.last_robust() / n,
            "per_attack": {m: r / n for m, r in self.n_robust.items()},
            "mean_norm": self.norm_sum / self.norm_n if self.norm_n else 0.0,
            "mean_norm_fooled": self.norm_fooled_sum / self.norm_fooled_n if self.norm_fooled_n else None,
        }


def robust_accuracy(
    model: nn.Module,
    data: Any,
    threat: ThreatModel,
    attack: str | Attack = "pgd",
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    checks_enabled: bool = True,
    *,
    check_steps: bool = False,
    still_robust: Tensor | None = None,
    per_example: bool = False,
    **options: Any,
) -> dict:
    """Clean and robust accuracy of ``model`` on ``data`` (an ImageSet, or (images, labels)
    with float images in [0, 1] or uint8 images) under ``attack``.

    ``attack``: a name of :data:`ATTACKS` (or an alias, :func:`normalize_attack`) configured
    with ``options`` (the fields of its class, e.g. ``steps``, ``restarts`` for ``pgd``; an
    option given as None takes the attack's default; an option the attack does not have is a
    :class:`UserError`), or a configured :class:`Attack`. ``seed`` seeds the attack's
    generator. ``check_steps=True`` reruns the attack at half its steps on the first batch and
    warns if robust accuracy rises with more steps (always on for autoattack, whose check reruns
    APGD-CE); ``checks_enabled=False`` skips every check.

    ``still_robust`` (N,) bool: attack only these images, the others counting as broken by an
    earlier attack (AutoAttack's robust flags: the worst case over that attack and this one, on
    the same images, with the same randomness per image as an attack of every image).
    ``per_example=True`` adds ``"robust_flags"`` and ``"clean_flags"``: (N,) bool tensors (CPU)
    of the images still robust after the attack and of those classified correctly when clean.
    """
    config = _configure(attack, options)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"--batch-size: expected a positive integer, got {batch_size!r}")
    images, labels = _as_tensors(data)
    dev = _model_device(model) if device is None else torch.device(device)
    batches = _Batches(images, labels, batch_size, dev, model)
    if len(batches) == 0:
        raise UserError("data: no images to evaluate")
    if still_robust is not None and tuple(still_robust.shape) != (len(batches),):
        raise UserError(f"still_robust: expected {len(batches)} flags, one per image, got shape {tuple(still_robust.shape)}")
    recorded = dict(options, check_steps=True) if check_steps else dict(options)
    with eval_mode(model):
        num_classes = None  # validate every batch (range of images and labels) before any attack work
        for _, xb, yb in batches:
            num_classes = check_inputs(model, xb, yb, threat, num_classes=num_classes)
        t0 = time.perf_counter()
        tally, messages = _attack_all(model, batches, threat, config, seed, progress, checks_enabled, check_steps, still_robust)
    out = {"attack": config.name, "threat": threat.to_dict(), **tally.metrics(len(batches)), "seconds": time.perf_counter() - t0,
           "options": recorded, "warnings": messages}
    if per_example:
        out["robust_flags"], out["clean_flags"] = torch.cat(tally.flags), torch.cat(tally.clean_flags)
    return out


def _configure(attack: str | Attack, options: dict[str, Any]) -> Attack:
    """The attack to run: a configured one as it is, else ``attack`` from the registry with
    ``options`` (those given as None left at the attack's default)."""
    if isinstance(attack, Attack):
        if options:
            raise UserError(f"robust_accuracy: options {sorted(options)} given with a configured attack; set them on the attack")
        return attack
    return make_attack(attack, **{k: v for k, v in options.items() if v is not None})


def _attack_all(
    model: nn.Module, batches: _Batches, threat: ThreatModel, attack: Attack, seed: int, progress: bool, checks_enabled: bool,
    check_steps: bool, still_robust: Tensor | None = None,
) -> tuple[_Tally, list[str]]:
    """Attack every batch with one generator seeded with ``seed`` (only the ``still_robust``
    images, when given); the checks run on the first batch. Returns the tally and the evaluation
    warnings (re-issued too)."""
    gen = torch.Generator(device=batches.device)
    gen.manual_seed(seed)
    tally = _Tally()
    n = len(batches)
    n_batches = -(-n // batches.size)
    bar = Progress(f"{attack.name} {threat.norm} eps={threat.eps:.4g}", n, enabled=progress)
    with bar, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", checks.EvaluationWarning)
        for bi, (i, xb, yb) in enumerate(batches):
            if bi == 0 and checks_enabled:
                _model_checks(model, xb, yb)
            todo = None if still_robust is None else still_robust[i : i + batches.size].to(xb.device)
            x_adv, clean, after = attack.evaluate_batch(model, xb, yb, threat, generator=gen, still_robust=todo)
            tally.count_robust(after)
            if bi == 0 and checks_enabled and (check_steps or attack.always_checks_steps):
                _steps_check(model, xb, yb, threat, attack, seed, clean if todo is None else clean & todo, after)
            tally.add(threat, xb, x_adv, clean, list(after.values())[-1])
            seen = min(n, i + batches.size)
            bar.update(len(yb), step=f"batch {bi + 1}/{n_batches}", clean=f"{100 * tally.n_clean / seen:.1f}%",
                       robust=f"{100 * tally.last_robust() / seen:.1f}%")
    messages = []
    for w in caught:
        if issubclass(w.category, checks.EvaluationWarning):
            messages.append(str(w.message))
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return tally, messages


def _model_checks(model: nn.Module, xb: Tensor, yb: Tensor) -> None:
    """Randomness, softmax output and gradient masking, on (at most) the first 64 points."""
    xc, yc = xb[: min(64, len(xb))], yb[: min(64, len(yb))]
    with torch.no_grad():
        a, b = model(xc), model(xc)
    checks.check_randomness(model, xc, outputs=(a, b))
    checks.check_softmax(model, xc, out=a)  # the first pass's output (one forward fewer)
    checks.check_gradients(model, xc, yc)


def _steps_check(
    model: nn.Module, xb: Tensor, yb: Tensor, threat: ThreatModel, attack: Attack, seed: int, clean: Tensor, after: dict[str, Tensor]
) -> None:
    """Rerun the attack (the ensemble: APGD-CE) at half the steps on this batch and compare."""
    halved = attack.halved()
    if halved is None:
        return
    idx = clean.nonzero().squeeze(1)
    if idx.numel() == 0:
        return
    gen = torch.Generator(device=xb.device)
    gen.manual_seed(seed + 1)
    adv = halved.attack.perturb(model, xb, yb, threat, generator=gen, index=idx)
    with torch.no_grad():
        still = ~fooled(model(adv), yb[idx])
    n = len(yb)
    checks.check_steps(float(after[halved.name].sum()) / n, float(still.sum()) / n, halved.steps, n)
