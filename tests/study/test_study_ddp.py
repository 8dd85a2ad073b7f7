"""``robustlens study`` under torchrun: 2 gloo processes train together, rank 0 runs the rest.

Same results layout as a single process: a single-process rerun of the same spec finds every
stage cached (so the hashes, the folders and done.json agree) and the training was really
distributed (the trainer's resolved run records world_size 2)."""

import json
import os
import socket
import subprocess
import sys

# Only what training needs: data, three models (std, adv and a third STD one) and one cheap probe.
# (A generation judge would not be trained: the generation stage is disabled.)
DISABLE = "".join(f"[stages.{s}]\nenabled = false\n" for s in
                  ("transforms", "bias", "neurons", "saliency", "featvis", "sanity", "localisation", "generation"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(tmp_path, write_tiny_spec):
    p = write_tiny_spec(tmp_path, **{"[stages.transforms]": "[stages.transforms_unused]"})
    text = p.read_text().replace("[stages.transforms_unused]", "[stages.transforms]")
    # the tiny spec sets keys of the disabled stages; drop those tables and disable them
    keep = text.split("[stages.transforms]")[0]
    p.write_text(keep + DISABLE + "[models.extra]\nepochs = 1\narch_options = { width = 4 }\n"
                 "train_options = { check_size = 0 }\n")
    return p


def test_study_trains_under_torchrun_with_two_gloo_processes(tmp_path, write_tiny_spec):
    spec = _spec(tmp_path, write_tiny_spec)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "robustlens.cli", "study", str(spec), "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "runs" / "tiny"
    results = json.loads((run / "results.json").read_text())
    for name in ("train_std", "train_adv", "train_extra", "robustness"):
        assert results["stages"][name]["status"] == "measured", name
    for name in ("std", "adv", "extra"):
        res = results["results"][f"train_{name}"]
        assert res["source"] == "trained"
        assert (run / "checkpoints" / f"{name}.safetensors").exists()
        assert res["processes"] == 2 and res["history"], name  # trained by both processes
    timings = json.loads((run / "timings.json").read_text())
    assert timings["stages"]["train_std"]["status"] == "done" and timings["stages"]["train_std"]["seconds"] > 0
    # one folder per stage, no temporary folders, no scratch left by rank 1
    names = sorted(p.name for p in (run / "stages").iterdir())
    assert not [n for n in names if n.startswith(".tmp")], names
    assert len([n for n in names if n.startswith("train_std-")]) == 1
    assert "torchrun: 2 processes train" in proc.stdout
    # a single-process rerun finds everything cached: same hashes, same layout
    again = subprocess.run([sys.executable, "-m", "robustlens.cli", "study", str(spec), "--device", "cpu"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    stage_lines = [line for line in again.stdout.splitlines() if line.startswith("[")]
    assert len(stage_lines) == len(results["stages"]) and all("cached" in line for line in stage_lines), again.stdout
    assert json.loads((run / "results.json").read_text()) == results
