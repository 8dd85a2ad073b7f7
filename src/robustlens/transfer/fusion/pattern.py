"""The paper's pattern in a fusion table (Itazuri et al. 2019, Fig. 9): ADV+ADV wins on
low-resolution data sets, STD+STD on high-resolution ones, STD+ADV is close to the best.

:func:`best_variant`, :func:`gap_to_best` and :func:`within_best` take one data set's mean
accuracy per variant (``{variant: mean}``); they are the single definition of "best" and "gap"
for :func:`paper_pattern` and for the study's claims (``study/claims.py``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def best_variant(accs: Mapping[str, float]) -> str:
    """The variant with the highest mean accuracy (the first one listed on a tie)."""
    return max(accs, key=accs.get)


def gap_to_best(accs: Mapping[str, float], variant: str) -> float:
    """How far ``variant`` is behind the best variant (accuracy points, >= 0)."""
    return max(accs.values()) - accs[variant]


def within_best(accs: Mapping[str, float], variant: str, tolerance: float = 0.0) -> bool:
    """Whether ``variant`` is the best up to ``tolerance`` (ties within it count as best)."""
    return accs[variant] >= max(accs.values()) - tolerance


def mean_table(table: Sequence[dict]) -> dict[tuple[str, int], dict[str, float]]:
    """``{(dataset, resolution): {variant: mean}}`` from the rows of ``summarise``."""
    by_set: dict[tuple[str, int], dict[str, float]] = {}
    for row in table:
        by_set.setdefault((row["dataset"], row["resolution"]), {})[row["variant"]] = row["mean"]
    return by_set


def paper_pattern(table: Sequence[dict]) -> dict:
    """Check the paper's claim per data set: which variant is best, and how far STD+ADV is behind.

    Returns, per ``"dataset Rpx"``: the best variant, the gap of ``std+adv`` to the best (in
    accuracy points) and, overall, whether ADV+ADV beats STD+STD at the lowest resolution and
    STD+STD beats ADV+ADV at the highest.
    """
    out: dict[str, Any] = {"per_dataset": {}}
    for (name, res), accs in sorted(mean_table(table).items(), key=lambda kv: (kv[0][1], kv[0][0])):
        best = best_variant(accs)
        entry = {"best": best, "best_accuracy": accs[best]}
        if "std+adv" in accs:
            entry["std+adv_gap_to_best"] = gap_to_best(accs, "std+adv")
        if "std+std" in accs and "adv+adv" in accs:
            entry["adv+adv_minus_std+std"] = accs["adv+adv"] - accs["std+std"]
        out["per_dataset"][f"{name} {res}px"] = entry
    diffs = [(k, e["adv+adv_minus_std+std"]) for k, e in out["per_dataset"].items() if "adv+adv_minus_std+std" in e]
    if len(diffs) >= 2:
        out["adv+adv_wins_lowest_resolution"] = diffs[0][1] > 0
        out["std+std_wins_highest_resolution"] = diffs[-1][1] < 0
    return out
