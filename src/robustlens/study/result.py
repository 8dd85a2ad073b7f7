"""What a study stage returns: :class:`StageResult`, the typed form of a stage's ``result.json``.

A stage's numbers are its own (``numbers``: JSON-able, listed per stage in
``docs/results-schema.md``); the parts the report shows are the same for every stage:
``notes``, ``summary`` (a sentence), ``tables`` (``{title: {"header": [...], "rows": [...]}}``),
``figures`` (``{key: file name in the stage folder}``) and ``captions`` (``{key: text}``). A
part left at ``None`` is absent from ``result.json``. ``to_dict`` writes the numbers first,
then the parts in ``order`` (each stage keeps the key order its ``result.json`` always had);
``from_dict`` reads a ``result.json`` (a cached stage) back. Torch-free, like the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PARTS = ("notes", "summary", "tables", "figures", "captions")


@dataclass(frozen=True)
class StageResult:
    """A stage's numbers and the figures, captions, tables and summary the report shows."""

    numbers: dict[str, Any] = field(default_factory=dict)
    notes: list[str] | None = None
    summary: str | None = None
    tables: dict[str, dict] | None = None
    figures: dict[str, str] | None = None
    captions: dict[str, str] | None = None
    order: tuple[str, ...] = PARTS  # where each part goes in result.json, after the numbers

    def __post_init__(self) -> None:
        if sorted(self.order) != sorted(PARTS):
            raise ValueError(f"StageResult.order must list each of {PARTS} once, got {self.order}")
        clash = set(self.numbers) & set(PARTS)
        if clash:
            raise ValueError(f"StageResult.numbers must not hold the parts {sorted(clash)}")

    def parts(self) -> dict[str, Any]:
        """The report's parts by name (``None``: absent)."""
        return {"notes": self.notes, "summary": self.summary, "tables": self.tables,
                "figures": self.figures, "captions": self.captions}

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` content: the numbers, then every part that is set, in ``order``."""
        parts = self.parts()
        return {**self.numbers, **{k: parts[k] for k in self.order if parts[k] is not None}}

    @classmethod
    def from_dict(cls, result: dict[str, Any]) -> "StageResult":
        """A ``result.json`` read back (the parts' order is kept)."""
        present = tuple(k for k in result if k in PARTS)
        order = present + tuple(k for k in PARTS if k not in present)
        return cls(numbers={k: v for k, v in result.items() if k not in PARTS},
                   order=order, **{k: result[k] for k in present})

    def caption(self, key: str) -> str:
        """The caption of figure ``key`` (the key itself when it has none)."""
        return (self.captions or {}).get(key, key)
