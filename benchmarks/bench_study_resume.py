"""Kill-and-resume determinism and cached-rerun time of `robustlens study`.

    python benchmarks/bench_study_resume.py [SPEC.toml] [--kills 2]

Runs SPEC (default: the tests' tiny spec) uninterrupted in one folder; in another, starts it,
SIGKILLs it at a random moment (seeded), restarts, ... and lets the last run finish; then
compares the two results.json byte for byte and times a fully cached rerun.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "study"))


def run(spec: Path, out: Path, kill_after: float | None = None) -> float:
    cmd = [sys.executable, "-m", "robustlens.cli", "study", str(spec), "--out-dir", str(out)]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_after is not None:
        try:
            p.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            return -1.0
    else:
        p.wait()
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed with {p.returncode}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?")
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_study_"))
    if a.spec:
        spec = Path(a.spec)
    else:
        from helpers_study import write_tiny_spec

        spec = write_tiny_spec(tmp)
    full = run(spec, tmp / "a")
    print(f"uninterrupted: {full:.1f} s")
    rng = random.Random(a.seed)
    killed = 0
    for _ in range(a.kills):
        t = rng.uniform(0.15, 0.85) * full
        if run(spec, tmp / "b", kill_after=t) < 0:
            killed += 1
            print(f"killed after {t:.1f} s")
    resumed = run(spec, tmp / "b")
    print(f"final resumed run: {resumed:.1f} s ({killed} kills)")
    cached = run(spec, tmp / "a")
    print(f"cached rerun: {cached:.1f} s")
    name = next((tmp / "a").iterdir()).name
    same = (tmp / "a" / name / "results.json").read_bytes() == (tmp / "b" / name / "results.json").read_bytes()
    print(f"results.json identical after kill + resume: {same}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
