"""One registry type for every family: models, attacks, saliency methods, probes, readers, stages.

A :class:`Registry` maps a name to a member (a factory, a config class, a function) and a
one-line description. ``get`` fails with a :class:`~robustlens.errors.UserError` that names
the argument (``--attack``, ``stages.saliency.methods``), suggests the closest name and lists
the valid ones, so every family reports an unknown name the same way (after timm's
``_registry.py``)::

    ATTACKS = Registry("attack", key="--attack")

    @ATTACKS.register("pgd", "projected gradient descent (Madry et al. 2018)")
    @dataclass(frozen=True)
    class PGD: ...

    ATTACKS.get("pdg")  # UserError: --attack: unknown attack 'pdg' (did you mean 'pgd'?); valid: ...

The names themselves live in the torch-free :mod:`robustlens.names`, so the spec checker can
validate a spec without importing torch; a test checks that each registry holds exactly the
names listed there.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from robustlens.errors import UserError

T = TypeVar("T")


def unknown_name(kind: str, name: object, valid: list[str] | tuple[str, ...], key: str = "") -> UserError:
    """The one-line error for an unknown ``name`` of ``kind``: ``key: unknown kind 'x' (did you mean 'y'?); valid: ...``."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    prefix = f"{key}: " if key else ""
    return UserError(f"{prefix}unknown {kind} {name!r}{hint}; valid: {', '.join(valid)}")


class Registry(Generic[T]):
    """Named members of one family, in registration order."""

    def __init__(self, kind: str, key: str = "") -> None:
        self.kind = kind  # "attack", "saliency method", ...
        self.key = key  # the argument that names a member, for errors ("--attack")
        self._members: dict[str, T] = {}
        self._info: dict[str, str] = {}

    def register(self, name: str, info: str = "") -> Callable[[T], T]:
        """Decorator: register ``member`` under ``name`` (a name is registered once)."""

        def deco(member: T) -> T:
            self.add(name, member, info)
            return member

        return deco

    def add(self, name: str, member: T, info: str = "") -> T:
        """Register ``member`` under ``name``; the description defaults to its docstring's first line."""
        if name in self._members:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._members[name] = member
        doc = (getattr(member, "__doc__", None) or "").strip().split("\n")[0]
        self._info[name] = info or doc
        return member

    def get(self, name: str, key: str = "") -> T:
        """The member ``name``; an unknown name is a :class:`UserError` with a close match."""
        if name not in self._members:
            raise unknown_name(self.kind, name, self.names(), key or self.key)
        return self._members[name]

    def names(self) -> list[str]:
        return list(self._members)

    def info(self) -> dict[str, str]:
        """Name -> one-line description, in registration order."""
        return dict(self._info)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._members.items())

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._members)})"
