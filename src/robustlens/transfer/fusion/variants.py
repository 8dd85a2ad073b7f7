"""The variant grammar: ``KIND`` or ``KIND+KIND`` (``std``, ``adv``, ``std+std``, ``adv+adv``,
``std+adv``); the k-th occurrence of a kind in a variant uses that kind's k-th backbone."""

from __future__ import annotations

from typing import Sequence

from robustlens.errors import UserError

DEFAULT_VARIANTS = ("std", "adv", "std+std", "adv+adv", "std+adv")


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
