"""Compare two results.json files number by number (the "a refactor changes no number" check).

    python benchmarks/compare_results.py BEFORE/results.json AFTER/results.json

Every number under ``results`` and every claim's verdict and numbers must be identical; stage
hashes, seconds, paths and versions may differ. Prints each difference and exits 1 if any.
"""

from __future__ import annotations

import json
import sys
from typing import Any

IGNORED_KEYS = {"seconds", "hash", "stage_hash", "time", "wall_seconds", "elapsed", "versions", "dir", "path", "timings"}


def _walk(a: Any, b: Any, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in IGNORED_KEYS or k.endswith("_seconds") or k.endswith("_s"):
                continue
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only in {'after' if k not in a else 'before'}")
                continue
            _walk(a[k], b[k], f"{where}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            _walk(x, y, f"{where}[{i}]", out)
    elif a != b and not (isinstance(a, float) and isinstance(b, float) and a != a and b != b):
        out.append(f"{where}: {a!r} != {b!r}")


def compare(before: dict, after: dict) -> list[str]:
    out: list[str] = []
    _walk(before.get("results"), after.get("results"), "results", out)
    _walk(before.get("claims"), after.get("claims"), "claims", out)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip())
        return 2
    before, after = (json.loads(open(p).read()) for p in argv)
    diffs = compare(before, after)
    n = sum(1 for _ in json.dumps(before.get("results")).split(","))
    for d in diffs:
        print(d)
    print(f"{len(diffs)} differences ({argv[0]} vs {argv[1]}; about {n} fields compared)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
