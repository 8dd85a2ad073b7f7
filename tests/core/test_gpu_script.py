"""The prepared GPU script (``benchmarks/gpu/run.sh``) cannot rot: its ``--smoke`` run, on the
CPU and at tiny sizes, goes through every part and writes the record it would on a GPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "run.py"


def test_gpu_script_smoke_runs_every_part(tmp_path, one_thread):
    spec = importlib.util.spec_from_file_location("gpu_run", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "gpu.json").read_text())
    assert rec["smoke"] is True and rec["device"] in ("cpu", "cuda")
    assert set(rec["smoke_paths"]) == {"loader", "bf16", "channels_last", "compile", "ddp"}
    assert all(p["ok"] for p in rec["smoke_paths"].values()), rec["smoke_paths"]
    assert rec["smoke_paths"]["channels_last"]["max_abs_diff"] < 1e-4
    fast = rec["fast_at"]
    assert fast["ok"] and 0 <= fast["clean_accuracy"] <= 1 and 0 <= fast["ensemble"] <= fast["clean_accuracy"]
    assert fast["eval_images"] == 32 and len(fast["history"]) == 1
    pgd = rec["pgd10"]
    assert pgd["ok"] and set(pgd["median_ms"]) == {"bare_contiguous", "robustlens_contiguous", "bare_channels_last", "robustlens_channels_last"}
    assert "done in" in (tmp_path / "gpu.log").read_text()
