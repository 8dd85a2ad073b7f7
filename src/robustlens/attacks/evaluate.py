"""Robust accuracy of any ``nn.Module`` taking [0, 1] images, under any attack of the package.

``robust_accuracy(model, data, threat, attack="pgd", ...)`` sets the model to eval mode,
attacks batch by batch (only the points classified correctly when clean, as AutoAttack does,
so robust accuracy can never exceed clean accuracy), restores every module's previous
train/eval mode, and returns::

    {"clean_accuracy", "robust_accuracy", "per_attack": {name: robust accuracy after it},
     "mean_norm": mean perturbation norm (threat's norm) over the attacked points,
     "mean_norm_fooled": the same over the points the attack fooled,
     "seconds", "n", "attack", "threat", "warnings"}

For ``attack="autoattack"`` ``per_attack`` holds the robust accuracy after each member in
sequence (as AutoAttack prints it); the last one is the worst case.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from robustlens.attacks import checks
from robustlens.attacks._common import check_counts, check_inputs, fooled
from robustlens.attacks.apgd import apgd_run, apgd_t_run
from robustlens.attacks.autoattack import STANDARD, run_ensemble
from robustlens.attacks.fab import fab_run
from robustlens.attacks.fgsm import fgsm
from robustlens.attacks.losses import get_loss
from robustlens.attacks.pgd import pgd_run
from robustlens.attacks.square import square_run
from robustlens.errors import UserError
from robustlens.threat import ThreatModel

ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-t", "apgd-dlr", "fab", "fab-t", "square", "autoattack")


def normalize_attack(name: str) -> str:
    key = str(name).lower().replace("_", "-")
    key = {"aa": "autoattack", "apgd": "apgd-ce", "apgdce": "apgd-ce", "apgdt": "apgd-t", "fabt": "fab-t", "fgsm-rs": "fgsm"}.get(key, key)
    if key not in ATTACKS:
        raise UserError(f"--attack: unknown attack {name!r}; expected one of {', '.join(ATTACKS)}")
    return key


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode, then restore each one's own previous mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


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
    if hasattr(data, "images") and hasattr(data, "labels"):
        return data.images, data.labels
    raise UserError(f"data: expected an ImageSet or a pair (images, labels), got {type(data).__name__}")


def _attack_batch(
    attack: str, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, threat: ThreatModel, kw: dict, gen: torch.Generator
) -> Tensor:
    steps = kw.get("steps")
    if attack == "fgsm":
        return fgsm(model, x[idx], y[idx], threat, kw.get("random_start", False), kw.get("step_size"), gen, loss=kw.get("loss", "ce"))
    if attack == "pgd":
        return pgd_run(
            model, x, y, threat, 10 if steps is None else steps, kw.get("step_size"), kw.get("restarts", 1),
            get_loss(kw.get("loss", "ce")), False, kw.get("random_start", True), kw.get("early_stop", False), gen, idx,
        )
    if attack in ("apgd-ce", "apgd-dlr"):
        loss = "ce" if attack == "apgd-ce" else "dlr"
        return apgd_run(model, x, y, threat, 100 if steps is None else steps, kw.get("restarts", 1), loss, kw.get("random_start", True), gen, idx)
    if attack == "apgd-t":
        return apgd_t_run(
            model, x, y, threat, 100 if steps is None else steps, kw.get("n_target_classes", 9), kw.get("restarts", 1),
            kw.get("random_start", True), gen, idx,
        )
    if attack in ("fab", "fab-t"):
        return fab_run(
            model, x, y, threat, 100 if steps is None else steps, attack == "fab-t", kw.get("n_target_classes", 9), kw.get("restarts", 1),
            kw.get("alpha_max", 0.1), kw.get("eta", 1.05), kw.get("beta", 0.9), gen, idx, clamp_targets=True,
        )
    if attack == "square":
        return square_run(model, x, y, threat, kw.get("n_queries", 5000), kw.get("p_init", 0.8), gen, idx)
    raise UserError(f"--attack: unknown attack {attack!r}")  # pragma: no cover - normalised before


_KNOWN = {"steps", "step_size", "restarts", "loss", "random_start", "early_stop", "n_target_classes", "n_queries", "p_init", "attacks", "check_steps", "alpha_max", "eta", "beta"}


def robust_accuracy(
    model: nn.Module,
    data: Any,
    threat: ThreatModel,
    attack: str = "pgd",
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    checks_enabled: bool = True,
    **attack_kwargs: Any,
) -> dict:
    """Clean and robust accuracy of ``model`` on ``data`` (an ImageSet, or (images, labels)
    with float images in [0, 1] or uint8 images) under ``attack``.

    ``attack_kwargs``: ``steps``, ``step_size``, ``restarts``, ``loss`` ("ce"/"cw"),
    ``random_start``, ``early_stop`` (pgd); ``steps``, ``restarts``, ``n_target_classes``
    (apgd); ``steps``, ``restarts``, ``n_target_classes`` (capped at K - 1), ``alpha_max``,
    ``eta``, ``beta`` (fab, fab-t: the full minimum-norm search, so ``mean_norm_fooled`` is the
    mean smallest adversarial norm found within eps); ``n_queries``, ``p_init`` (square); ``attacks``, ``steps``, ``n_queries``
    (autoattack); ``check_steps=True`` reruns the attack at ``steps // 2`` on the first batch
    and warns if robust accuracy rises with more steps (always on for autoattack).
    """
    attack = normalize_attack(attack)
    unknown = set(attack_kwargs) - _KNOWN
    if unknown:
        raise UserError(f"robust_accuracy: unknown options {sorted(unknown)}; expected some of {sorted(_KNOWN)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"--batch-size: expected a positive integer, got {batch_size!r}")
    if "steps" in attack_kwargs or "restarts" in attack_kwargs:
        check_counts(attack_kwargs.get("steps", 1) if attack_kwargs.get("steps") is not None else 1, attack_kwargs.get("restarts", 1), min_steps=0)
        if attack in ("apgd-ce", "apgd-t", "apgd-dlr", "fab", "fab-t", "autoattack") and attack_kwargs.get("steps") == 0:
            raise UserError("--steps: APGD and FAB need at least 1 step")
    if attack != "autoattack" and "attacks" in attack_kwargs:
        raise UserError("attacks=...: only for attack='autoattack'")
    images, labels = _as_tensors(data)
    dev = _model_device(model) if device is None else torch.device(device)
    n = int(labels.shape[0])
    if n == 0:
        raise UserError("data: no images to evaluate")
    members = tuple(attack_kwargs.get("attacks", STANDARD)) if attack == "autoattack" else (attack,)

    # Validate everything before any attack work: range of images and labels.
    def batch(i: int) -> tuple[Tensor, Tensor]:
        xb = images[i : i + batch_size].to(dev)
        xb = xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb
        return xb, labels[i : i + batch_size].to(dev)

    with eval_mode(model):
        num_classes = None
        for i in range(0, n, batch_size):
            xb, yb = batch(i)
            num_classes = check_inputs(model, xb, yb, threat, num_classes=num_classes)
        return _run(model, batch, n, batch_size, threat, attack, members, dev, seed, progress, checks_enabled, attack_kwargs)


def _run(model, batch, n, batch_size, threat, attack, members, dev, seed, progress, checks_enabled, kw) -> dict:
    from tqdm.auto import tqdm

    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    messages: list[str] = []
    n_clean = 0
    n_robust = {m: 0 for m in members}
    norm_sum, norm_n, norm_fooled_sum, norm_fooled_n = 0.0, 0, 0.0, 0
    t0 = time.perf_counter()
    bar = tqdm(total=n, desc=f"{attack} {threat.norm} eps={threat.eps:.4g}", unit="img", disable=not progress, leave=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", checks.EvaluationWarning)
        for bi, i in enumerate(range(0, n, batch_size)):
            xb, yb = batch(i)
            if bi == 0 and checks_enabled:
                xc, yc = xb[: min(64, len(xb))], yb[: min(64, len(yb))]
                checks.check_randomness(model, xc)
                checks.check_softmax(model, xc)
                checks.check_gradients(model, xc, yc)
            if attack == "autoattack":
                x_adv, clean, after = run_ensemble(
                    model, xb, yb, threat, members, kw.get("steps", 100) or 100, kw.get("n_queries", 5000), kw.get("n_target_classes", 9), seed
                )
                for m in members:
                    n_robust[m] += int(after[m].sum())
                robust = after[members[-1]]
                if bi == 0 and checks_enabled and "apgd-ce" in members and (kw.get("steps", 100) or 100) >= 2:
                    _steps_check(model, xb, yb, threat, attack, kw, dev, seed, clean, after["apgd-ce"])
            else:
                with torch.no_grad():
                    clean = ~fooled(model(xb), yb)
                idx = clean.nonzero().squeeze(1)
                x_adv = xb.clone()
                robust = clean.clone()
                if idx.numel():
                    adv = _attack_batch(attack, model, xb, yb, idx, threat, kw, gen)
                    with torch.no_grad():
                        hit = fooled(model(adv), yb[idx])
                    x_adv[idx] = adv
                    robust[idx[hit]] = False
                n_robust[attack] += int(robust.sum())
                if bi == 0 and checks_enabled and kw.get("check_steps") and attack in ("pgd", "apgd-ce", "apgd-t", "apgd-dlr"):
                    _steps_check(model, xb, yb, threat, attack, kw, dev, seed, clean, robust)
            n_clean += int(clean.sum())
            attacked = clean.nonzero().squeeze(1)
            if attacked.numel():
                norms = threat.lengths(x_adv[attacked] - xb[attacked])
                norm_sum += float(norms.sum())
                norm_n += attacked.numel()
                hit_rows = clean & ~robust
                if bool(hit_rows.any()):
                    nf = threat.lengths(x_adv[hit_rows] - xb[hit_rows])
                    norm_fooled_sum += float(nf.sum())
                    norm_fooled_n += int(hit_rows.sum())
            bar.update(len(yb))
            bar.set_postfix(clean=f"{100 * n_clean / min(n, i + batch_size):.1f}%", robust=f"{100 * n_robust[members[-1]] / min(n, i + batch_size):.1f}%")
    bar.close()
    for w in caught:
        if issubclass(w.category, checks.EvaluationWarning):
            messages.append(str(w.message))
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return {
        "attack": attack,
        "threat": threat.to_dict(),
        "n": n,
        "clean_accuracy": n_clean / n,
        "robust_accuracy": n_robust[members[-1]] / n,
        "per_attack": {m: n_robust[m] / n for m in members},
        "mean_norm": norm_sum / norm_n if norm_n else 0.0,
        "mean_norm_fooled": norm_fooled_sum / norm_fooled_n if norm_fooled_n else None,
        "seconds": time.perf_counter() - t0,
        "options": {k: v for k, v in kw.items()},
        "warnings": messages,
    }


def _steps_check(model, xb, yb, threat, attack, kw, dev, seed, clean, robust) -> None:
    """Rerun the (first) gradient attack at half the steps on this batch and compare."""
    base = "apgd-ce" if attack == "autoattack" else attack
    steps = kw.get("steps") or (10 if base == "pgd" else 100)
    if steps < 2:
        return
    idx = clean.nonzero().squeeze(1)
    if idx.numel() == 0:
        return
    half = dict(kw, steps=steps // 2)  # pgd's default step size 2.5 eps / steps follows
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed + 1)
    adv = _attack_batch(base, model, xb, yb, idx, threat, half, gen)
    with torch.no_grad():
        still = ~fooled(model(adv), yb[idx])
    n = len(yb)
    checks.check_steps(float(robust.sum()) / n, float(still.sum()) / n, steps, n)
