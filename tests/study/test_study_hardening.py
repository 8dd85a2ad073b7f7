"""Study hardening (issue 16): the run-folder lock (two processes), checkpoints/ copies that
follow the spec that ran last, and every bad value refused before any model is trained."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustlens.errors import UserError
from robustlens.study import load_spec, run_study

# the bare study: data and the two models, no analysis stage (a run takes a few seconds)
BARE = """
name = "bare"
out_dir = "{out}"
[data]
n_train = 48
n_test = 16
options = {{ contrast = 0.07, n_conflict = 0 }}
[models.std]
epochs = 1
batch_size = 16
seed = {seed}
arch_options = {{ width = 4 }}
train_options = {{ check_size = 0 }}
[models.adv]
epochs = 1
batch_size = 16
arch_options = {{ width = 4 }}
train_options = {{ check_size = 0 }}
""" + "".join(f"[stages.{s}]\nenabled = false\n" for s in
               ("robustness", "transforms", "bias", "neurons", "saliency", "featvis", "sanity", "localisation", "generation"))


def _spec(folder: Path, extra: str = "", seed: int = 0, **replace: str) -> Path:
    text = BARE.format(out=folder / "runs", seed=seed)
    for old, new in replace.items():
        text = text.replace(old, new)
    p = folder / f"bare{seed}.toml"
    p.write_text(text + extra)
    return p


def _run(path: Path) -> dict:
    return run_study(load_spec(path), stream=io.StringIO())


def test_checkpoints_follow_the_spec_that_ran_last(tmp_path, one_thread):
    """Spec A, then B (another seed, same sizes), then A: checkpoints/ holds A's model, byte for
    byte its stage's file, and its sidecar loads (``models --show checkpoints/std.json``)."""
    from robustlens.cli import main
    from robustlens.models.checkpoint import load_checkpoint

    a, b = _spec(tmp_path, seed=0), _spec(tmp_path, seed=1)
    ck = tmp_path / "runs" / "bare" / "checkpoints"
    for path in (a, b, a):
        out = _run(path)
    stage_file = out["outputs"]["train_std"].path("model.safetensors")
    assert (ck / "std.safetensors").read_bytes() == stage_file.read_bytes()
    side = json.loads((ck / "std.json").read_text())
    assert side["training"]["seed"] == 0 and side["weights_file"] == "std.safetensors"
    load_checkpoint(ck / "std.json")
    assert main(["models", "--show", str(ck / "std.json")]) == 0


_HOLDER = """
import sys, time
from robustlens.io import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_run_on_a_locked_folder_stops_with_the_pid(tmp_path):
    """Two processes, one run folder: the second stops at once with "already running (pid N)"
    and leaves the first one's temporary stage folder alone; once the first is gone, it runs."""
    spec = load_spec(_spec(tmp_path))
    run_dir = spec.run_dir
    tmp = run_dir / "stages" / ".tmp-train_std-0123456789ab"
    tmp.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        with pytest.raises(UserError, match=rf"already running \(pid {holder.pid}\)"):
            run_study(spec, stream=io.StringIO())
        assert time.perf_counter() - t0 < 5 and tmp.is_dir()  # nothing of the other run was touched
    finally:
        holder.kill()
        holder.wait()
    from robustlens.io import folder_lock

    with folder_lock(run_dir):  # the kernel released the killed holder's lock
        pass
    from robustlens.study.runner import Runner

    Runner([], run_dir, version="t", stream=io.StringIO()).run()  # the lock holder discards stale folders
    assert not tmp.exists()


def _no_training(tmp_path: Path) -> None:
    stages = tmp_path / "runs" / "bare" / "stages"
    assert not [p for p in stages.iterdir() if "train_" in p.name] if stages.exists() else True
    assert not (tmp_path / "runs" / "bare" / "work").exists()


@pytest.mark.parametrize("table, line, key", [
    ("stages.robustness", "batch_size = 0", "stages.robustness.batch_size"),
    ("stages.saliency", "ig_steps = 0", "stages.saliency.ig_steps"),
    ("stages.robustness", 'autoattack_attacks = ["apgd-nosuch"]', "stages.robustness.autoattack_attacks"),
    ("stages.featvis", "channels = 0", "stages.featvis.channels"),
])
def test_a_bad_stage_value_fails_at_parse_time(tmp_path, table, line, key):
    enabled = "enabled = true\n"
    path = _spec(tmp_path, **{f"[{table}]\nenabled = false\n": f"[{table}]\n{enabled}{line}\n"})
    with pytest.raises(UserError, match=rf":\d+: {key}: "):
        load_spec(path)


def _folder(root: Path, classes: list[str], per_class: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


@pytest.mark.parametrize("case", ["featvis_layer", "empty_test", "apgd_t_classes", "batch_size", "one_class"])
def test_data_dependent_values_fail_before_any_training(tmp_path, case, one_thread):
    """Each passes the spec check and, on main before issue 16, failed only after the models were trained."""
    data = ""
    if case in ("apgd_t_classes", "one_class"):
        folder = _folder(tmp_path / "img", ["a", "b", "c"] if case == "apgd_t_classes" else ["a"])
        data = f'source = "{folder}"\nsize = 16\n'
    replace = {
        "featvis_layer": {"[stages.featvis]\nenabled = false\n": '[stages.featvis]\nlayers = ["nosuch"]\n'},
        "empty_test": {"n_conflict = 0 }": "n_conflict = 0, n_test = 0 }"},
        "apgd_t_classes": {"[stages.robustness]\nenabled = false\n": "[stages.robustness]\nn = 8\n"},
        "batch_size": {"batch_size = 16\nseed": "batch_size = 64\nseed"},
        "one_class": {},
    }[case]
    if data:
        replace["[data]\n"] = "[data]\n" + data
        replace["options = { contrast = 0.07, n_conflict = 0 }\n"] = ""
    match = {"featvis_layer": r"stages\.featvis\.layers: models\.std \(small_cnn\): no module named 'nosuch'",
             "empty_test": r"data: the test split holds no images",
             "apgd_t_classes": r"stages\.robustness\.autoattack_attacks: apgd-t needs at least 4 classes and the data has 3",
             "batch_size": r"models\.std\.batch_size: a batch of 64 is larger than the 48 training images",
             "one_class": r"1 class \(a\); a classifier needs at least 2"}[case]
    with pytest.raises(UserError, match=match):
        _run(_spec(tmp_path, **replace))
    _no_training(tmp_path)


def test_a_non_utf8_spec_is_one_line(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1\.toml: not UTF-8 text \(byte 11"):
        load_spec(p)


def test_cli_study_lock_message_is_one_line(tmp_path):
    """The CLI prints the lock refusal as one line, rc 2."""
    spec = _spec(tmp_path)
    run_dir = tmp_path / "runs" / "bare"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = subprocess.run([sys.executable, "-m", "robustlens.cli", "study", str(spec)], capture_output=True, text=True, timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        textwrap.dedent(f"robustlens study: error: {run_dir}: already running (pid {holder.pid}); wait for it to finish, "
                        "or give this run another out_dir or name")]
