"""SIGKILL `robustlens train` and `robustlens study` at random moments, resume, compare.

    python benchmarks/bench_crash_resume.py [--kills 10] [--seed 0] [--out benchmarks/CRASH.md]

For each command: one uninterrupted reference run; then ``--kills`` trials, each in a fresh
folder: start the command, SIGKILL it at a random moment (seeded, uniform over 5-95% of the
shortest wall time seen; a draw after the run finished is redrawn, see :class:`Killer`), rerun it (``train --resume``; ``study`` as it is) to the end, and
compare with the reference: every tensor of the final checkpoints equal (``torch.equal``),
and for the study ``results.json`` byte-identical. Last, the lock: two `study` processes on
one run folder, the second must exit 2 with "already running (pid N)" while the first
finishes with the reference's results. Writes a Markdown report (the committed
``benchmarks/CRASH.md``).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = ["train", "--data", "trifeature:n_train=256,n_test=32,n_conflict=0", "--size", "16", "--width", "8",
         "--mode", "fgsm-rs", "--epochs", "2", "--batch-size", "32", "--check-size", "64", "--check-steps", "2",
         "--save-every", "4", "--quiet", "--device", "cpu"]

STUDY = """
name = "crash"
out_dir = "{out}"
[data]
n_train = 128
n_test = 32
options = {{ contrast = 0.07, n_conflict = 0 }}
[models.std]
epochs = 2
batch_size = 32
arch_options = {{ width = 8 }}
train_options = {{ check_size = 0, save_every = 4 }}
[models.adv]
epochs = 2
batch_size = 32
arch_options = {{ width = 8 }}
train_options = {{ check_size = 0, save_every = 4 }}
[stages.robustness]
n = 32
pgd_steps = 2
autoattack = false
""" + "".join(f"[stages.{s}]\nenabled = false\n" for s in
               ("transforms", "bias", "neurons", "saliency", "featvis", "sanity", "localisation", "generation"))


# every run imports one frozen copy of src/ (set in main): code edited in the checkout while the
# benchmark runs (a shared checkout) must not make the reference and a trial differ
ENV = dict(os.environ)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "robustlens.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=ENV)


def _finish(args: list[str]) -> float:
    t0 = time.perf_counter()
    p = _start(args)
    _, err = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"robustlens {' '.join(args)}: rc {p.returncode}: {err.strip()[-500:]}")
    return time.perf_counter() - t0


def _kill_at(args: list[str], seconds: float) -> float | None:
    """Start, SIGKILL after ``seconds``; the run's own wall time when it finished first (else None)."""
    t0 = time.perf_counter()
    p = _start(args)
    try:
        p.wait(timeout=seconds)
        return time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return None


class Killer:
    """SIGKILL a run at a random moment, uniform over 5-95% of the shortest wall time seen so far
    (the machine is shared: a run may go faster than the reference); a run that finished first
    is rerun in a fresh folder with a new draw, so every trial is a real kill. ``tries``: draws."""

    def __init__(self, t_ref: float, rng: random.Random) -> None:
        self.base, self.rng = t_ref, rng

    def __call__(self, args_for, fresh) -> tuple[float, int]:
        for tries in range(1, 21):
            fresh()
            at = self.rng.uniform(0.05, 0.95) * self.base
            finished = _kill_at(args_for(), at)
            if finished is None:
                return at, tries
            self.base = min(self.base, finished)
        raise SystemExit("20 draws in a row finished before their kill")


def _tensors_equal(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file
    import torch

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def crash_train(root: Path, kills: int, rng: random.Random) -> list[dict]:
    ref = root / "train_ref"
    t_ref = _finish([*TRAIN, "--out", str(ref)])
    rows = [{"trial": "reference", "kill_s": "", "draws": "", "equal": "", "seconds": round(t_ref, 1)}]
    kill = Killer(t_ref, rng)
    for i in range(kills):
        out = root / f"train_{i}"
        at, tries = kill(lambda: [*TRAIN, "--out", str(out)], lambda: shutil.rmtree(out, ignore_errors=True))
        _finish([*TRAIN, "--out", str(out), "--resume"])
        equal = all(_tensors_equal(ref / f, out / f) for f in ("last.safetensors", "best.safetensors"))
        rows.append({"trial": i, "kill_s": round(at, 2), "draws": tries, "equal": equal, "seconds": ""})
        print(f"train trial {i}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def crash_study(root: Path, kills: int, rng: random.Random) -> list[dict]:
    spec = root / "crash.toml"
    spec.write_text(STUDY.format(out=root / "study_ref"))
    ref = root / "study_ref" / "crash"
    t_ref = _finish(["study", str(spec)])
    rows = [{"trial": "reference", "kill_s": "", "draws": "", "equal": "", "seconds": round(t_ref, 1)}]
    kill = Killer(t_ref, rng)
    for i in range(kills):
        out_dir = root / f"study_{i}"
        at, tries = kill(lambda: ["study", str(spec), "--out-dir", str(out_dir)], lambda: shutil.rmtree(out_dir, ignore_errors=True))
        _finish(["study", str(spec), "--out-dir", str(out_dir)])
        run = out_dir / "crash"
        same = (run / "results.json").read_bytes() == (ref / "results.json").read_bytes()
        tensors = all(_tensors_equal(ref / "checkpoints" / f, run / "checkpoints" / f) for f in ("std.safetensors", "adv.safetensors"))
        rows.append({"trial": i, "kill_s": round(at, 2), "draws": tries, "equal": same and tensors, "seconds": ""})
        print(f"study trial {i}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def lock_test(root: Path) -> dict:
    spec = root / "crash.toml"
    out_dir = root / "study_lock"
    first = _start(["study", str(spec), "--out-dir", str(out_dir)])
    lock = out_dir / "crash" / ".lock"
    while not lock.exists() or not lock.read_text().strip():
        time.sleep(0.05)
    second = _start(["study", str(spec), "--out-dir", str(out_dir)])
    _, err2 = second.communicate()
    _, err1 = first.communicate()
    same = (out_dir / "crash" / "results.json").read_bytes() == (root / "study_ref" / "crash" / "results.json").read_bytes()
    return {"first_rc": first.returncode, "second_rc": second.returncode, "second_stderr": err2.strip(),
            "first_pid": first.pid, "first_results_identical": same}


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).with_name("CRASH.md")))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(Path(__file__).resolve().parents[1] / "src", root / "src")
        ENV["PYTHONPATH"] = str(root / "src")
        train_rows = crash_train(root, args.kills, rng)
        study_rows = crash_study(root, args.kills, rng)
        lock = lock_test(root)
    ok = all(r["equal"] for r in train_rows[1:] + study_rows[1:]) and lock["second_rc"] == 2 and lock["first_rc"] == 0 \
        and f"already running (pid {lock['first_pid']})" in lock["second_stderr"] and lock["first_results_identical"]
    text = "\n".join([
        "# Crash tests: SIGKILL at random moments, resume, compare",
        "",
        f"`python benchmarks/bench_crash_resume.py --kills {args.kills} --seed {args.seed}` "
        f"({time.perf_counter() - t0:.0f} s on this machine). Each trial SIGKILLs the command at a seeded random "
        "moment (uniform over 5-95% of the shortest wall time seen; a draw that came after the run had finished is "
        "redrawn in a fresh folder, `draws` counts them, so every trial is a real SIGKILL), reruns it to the end (`train --resume`; `study` as it is) and "
        "compares with an uninterrupted reference: `equal` = every tensor of the final checkpoints `torch.equal` "
        "(train: `last` and `best`; study: `checkpoints/std` and `adv`) and, for the study, `results.json` byte-identical. "
        "`kill_s`: seconds after the start.",
        "",
        f"## robustlens {' '.join(TRAIN)}",
        "",
        _table(train_rows),
        "",
        "## robustlens study (data, two trained models, a robustness stage)",
        "",
        _table(study_rows),
        "",
        "## Two `study` processes on one run folder",
        "",
        f"- first: rc {lock['first_rc']}, results.json identical to the reference: {lock['first_results_identical']}",
        f"- second: rc {lock['second_rc']}, stderr: `{lock['second_stderr']}` (first pid {lock['first_pid']})",
        "",
        f"**All checks: {'pass' if ok else 'FAIL'}**",
        "",
    ])
    Path(args.out).write_text(text)
    print(text)
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
