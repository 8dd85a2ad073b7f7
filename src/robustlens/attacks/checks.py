"""Checks that warn about an unreliable robustness evaluation (in the spirit of AutoAttack's
``checks.py``, Croce & Hein 2020, and the gradient-masking symptoms of Athalye et al. 2018).

Each check returns its message (or None) and issues a ``UserWarning`` through
``warnings.warn`` when something looks wrong; none of them stops the evaluation.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from robustlens.attacks._common import input_grad
from robustlens.attacks.losses import ce, is_probability_output


class EvaluationWarning(UserWarning):
    """A robustness number may be unreliable (randomness, masked gradients, ...)."""


def _warn(msg: str) -> str:
    warnings.warn(msg, EvaluationWarning, stacklevel=3)
    return msg


def check_randomness(model: nn.Module, x: Tensor, outputs: tuple[Tensor, Tensor] | None = None) -> str | None:
    """Warn when two identical forward passes differ (dropout or BN in train mode, noise).
    ``outputs``: the two passes' outputs, when the caller made them already."""
    if outputs is None:
        with torch.no_grad():
            outputs = model(x), model(x)
    a, b = outputs
    if not torch.allclose(a, b, rtol=1e-5, atol=1e-5):
        diff = float((a - b).abs().max())
        return _warn(
            f"the model's output changes between identical calls (max difference {diff:.3g}): it is randomised "
            "(dropout or batch norm in train mode, or a random defence); gradient attacks then need EOT and the "
            "robust accuracy reported may be too high"
        )
    return None


def check_softmax(model: nn.Module, x: Tensor, out: Tensor | None = None) -> str | None:
    """Warn when the model already outputs probabilities (its rows are >= 0 and sum to 1).
    ``out``: the model's output on ``x``, when the caller has it."""
    if out is None:
        with torch.no_grad():
            out = model(x)
    if is_probability_output(out):
        return _warn(
            "the model's output looks softmax-normalised (non-negative rows summing to 1): attacks expect logits; "
            "cross-entropy on probabilities has vanishing gradients and the robust accuracy may be overestimated"
        )
    return None


def check_gradients(model: nn.Module, x: Tensor, y: Tensor, max_zero_share: float = 0.05) -> str | None:
    """Warn when the input gradient of the CE loss is non-finite for any input, or zero for
    more than ``max_zero_share`` of them (a symptom of gradient masking / obfuscation)."""
    grad, _, _ = input_grad(model, x, y, ce)
    flat = grad.flatten(1)
    bad = (~torch.isfinite(flat)).any(1)
    zero = (flat == 0).all(1) & ~bad
    n = max(x.shape[0], 1)
    if bool(bad.any()):
        return _warn(
            f"non-finite input gradients for {int(bad.sum())} of {n} inputs: gradient-based attacks are unreliable "
            "on this model (check for masked / obfuscated gradients)"
        )
    if float(zero.sum()) / n > max_zero_share:
        return _warn(
            f"zero input gradients for {int(zero.sum())} of {n} inputs ({100 * float(zero.sum()) / n:.0f}%): "
            "gradient masking is likely and the robust accuracy from gradient attacks may be far too high; "
            "try --attack square or autoattack"
        )
    return None


def check_steps(robust_full: float, robust_half: float, steps: int, n: int) -> str | None:
    """Warn when robust accuracy *rises* with more steps (it should never, for a sound attack)."""
    if robust_full - robust_half > max(0.01, 1.0 / max(n, 1)) + 1e-12:
        return _warn(
            f"robust accuracy rose from {100 * robust_half:.2f}% at {steps // 2} steps to {100 * robust_full:.2f}% "
            f"at {steps} steps: the attack is not converging (gradient masking or a bad step size)"
        )
    return None
