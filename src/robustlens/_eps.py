"""Parsing eps values and ``norm:eps`` threat specs without importing torch (the study's spec
checker and the CLIs use them before torch is loaded; :mod:`robustlens.threat` re-exports them)."""

from __future__ import annotations

import math
from fractions import Fraction

from robustlens.errors import UserError

NORMS = ("linf", "l2", "l1")


def parse_eps(value: str | float | int, *, name: str = "--eps") -> float:
    """Parse an eps given as a number (Python, numpy or 0-d tensor) or a fraction ``"8/255"``."""
    if isinstance(value, bool):
        raise UserError(f"{name}: expected a number or a fraction like 8/255, got {value!r}")
    if isinstance(value, (int, float)):
        eps = float(value)
    elif not isinstance(value, str) and hasattr(value, "__float__") and getattr(value, "ndim", 0) == 0:
        eps = float(value)
    else:
        text = str(value).strip()
        try:
            eps = float(Fraction(text)) if "/" in text else float(text)
        except (ValueError, ZeroDivisionError):
            raise UserError(f"{name}: expected a number or a fraction like 8/255, got {value!r}") from None
    if not math.isfinite(eps) or eps < 0:
        raise UserError(f"{name}: expected a finite eps >= 0, got {value!r}")
    return eps


def parse_threat_spec(text: str, *, name: str = "threat") -> tuple[str, float]:
    """``"l2:0.25"`` / ``"linf:8/255"`` -> (norm, eps); ``name`` is the argument named in errors."""
    norm, sep, eps = str(text).partition(":")
    norm = norm.strip().lower().replace("-", "")
    if not sep or norm not in NORMS:
        raise UserError(f"{name}: expected 'norm:eps' with norm linf, l2 or l1 (e.g. 'l2:0.25'), got {text!r}")
    value = parse_eps(eps.strip(), name=name)
    if value <= 0:
        raise UserError(f"{name}: expected a positive eps in {text!r}")
    return norm, value
