"""The default study's must-show table over seeds (issue 15): for each run folder, clean,
PGD-20, ensemble and headline robust accuracy and shape bias of STD and ADV, mean +- sd over the runs, the
issue's targets, and every claim's verdict per run.

    # one spec per seed: the default with seed = s for the models, the data draw and the stages
    cd /tmp/rl15/seeds && robustlens study s0.toml   # (s1.toml, s2.toml)
    python benchmarks/bench_study_seeds.py /tmp/rl15/seeds/runs/s0 /tmp/rl15/seeds/runs/s1 ...
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

TARGETS = (
    ("STD clean >= 0.97", lambda n: n["std clean"] >= 0.97),
    ("STD ensemble <= 0.05", lambda n: n["std ensemble"] <= 0.05),
    ("ADV clean >= 0.80", lambda n: n["adv clean"] >= 0.80),
    ("STD clean - ADV clean >= 0.03", lambda n: n["std clean"] - n["adv clean"] >= 0.03),
    ("ADV ensemble >= 0.50", lambda n: n["adv ensemble"] >= 0.50),
    ("shape bias ADV - STD >= 0.30", lambda n: n["adv shape bias"] - n["std shape bias"] >= 0.30),
)


def numbers(run: Path) -> tuple[dict, dict]:
    """``({column: value}, {claim id: verdict})`` of one run folder's results.json."""
    res = json.loads((run / "results.json").read_text())
    r = res["results"]
    out = {}
    for kind in ("std", "adv"):
        rob = (r.get("robustness") or {}).get("models", {}).get(kind, {})
        out[f"{kind} clean"] = rob.get("clean_accuracy")
        out[f"{kind} PGD-20"] = rob.get("pgd_robust_accuracy", rob.get("robust_accuracy"))
        out[f"{kind} ensemble"] = (rob.get("autoattack") or {}).get("robust_accuracy")
        out[f"{kind} headline"] = rob.get("robust_accuracy")  # per-image worst case of PGD and the ensemble
        out[f"{kind} shape bias"] = (r.get("bias") or {}).get("models", {}).get(kind, {}).get("shape_bias")
    return out, {c["id"]: c["verdict"] for c in res.get("claims", [])}


def _seconds(run: Path) -> float | None:
    """The study's own total seconds (timings.json), if the run wrote them."""
    f = run / "timings.json"
    return json.loads(f.read_text()).get("total_seconds") if f.exists() else None


def main(runs: list[str]) -> None:
    rows = {Path(p).name: numbers(Path(p)) for p in runs}
    cols = list(next(iter(rows.values()))[0])
    print("| run | " + " | ".join(cols) + " |")
    print("|" + " --- |" * (len(cols) + 1))
    for name, (nums, _) in rows.items():
        print(f"| {name} | " + " | ".join("-" if nums[c] is None else f"{nums[c]:.3f}" for c in cols) + " |")
    stats = []
    for c in cols:
        vals = [n[c] for n, _ in rows.values() if n[c] is not None]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        stats.append(f"{statistics.mean(vals):.3f} ± {sd:.3f}" if vals else "-")
    print("| mean ± sd | " + " | ".join(stats) + " |\n")
    for label, test in TARGETS:
        print(f"{label}: " + ", ".join(f"{name} {'yes' if test(n) else 'NO'}" for name, (n, _) in rows.items()
                                        if all(v is not None for v in n.values())))
    timings = {name: _seconds(Path(p)) for name, p in zip(rows, runs)}
    print("\nseconds (timings.json): " + ", ".join(f"{n} {t:.1f}" for n, t in timings.items() if t is not None))
    ids = list(next(iter(rows.values()))[1])
    print("\n| claim | " + " | ".join(rows) + " |\n|" + " --- |" * (len(rows) + 1))
    for cid in ids:
        print(f"| {cid} | " + " | ".join(v.get(cid, "-") for _, v in rows.values()) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
