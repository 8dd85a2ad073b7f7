"""``robustlens explain --metrics``: the faithfulness and sensitivity numbers in explain.json are
exactly those of :func:`robustlens.explain.map_metrics.measure` (which the study stage calls)."""

from __future__ import annotations

import json

import pytest
import torch

from helpers_explain import small_model
from robustlens.cli import main
from robustlens.data import load
from robustlens.explain.map_metrics import GROUPS, MapMetricSettings, measure, parse_groups
from robustlens.errors import UserError
from robustlens.models.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
DATA = "trifeature:n_train=16,n_test=8,size=16"


def test_explain_metrics_equal_the_library(tmp_path):
    ckpt = tmp_path / "std.safetensors"
    save_checkpoint(ckpt, small_model(seed=0, dtype=torch.float32), {})
    out = tmp_path / "out"
    rc = main(["explain", "--checkpoint", str(ckpt), "--data", DATA, "--n", "2", "--methods", "vanilla,deeplift",
               "--metrics", "faithfulness,sensitivity", "--batch-size", "16", "--seed", "3", "--out", str(out)])
    assert rc == 0
    got = json.loads((out / "explain.json").read_text())["metrics"]
    assert got["groups"] == ["faithfulness", "sensitivity"]
    model, _ = load_checkpoint(ckpt)
    sub = load(DATA, split="test").sample(2)
    x = sub.float()
    for method in ("vanilla", "deeplift"):
        numbers, _ = measure(model, x, sub.labels, method, MapMetricSettings(batch_size=16, smoothgrad_samples=50, ig_steps=50), seed=3)
        row = got["models"]["std"][method]
        assert set(numbers) == set(GROUPS["faithfulness"] + GROUPS["sensitivity"])
        assert {k: row[k] for k in numbers} == pytest.approx(numbers, rel=1e-6, abs=1e-9)
        assert len(row["curves"]["deletion"]) == 11


def test_only_the_sensitivity_group(tmp_path):
    ckpt = tmp_path / "std.safetensors"
    save_checkpoint(ckpt, small_model(seed=0, dtype=torch.float32), {})
    rc = main(["explain", "--checkpoint", str(ckpt), "--data", DATA, "--n", "2", "--methods", "vanilla",
               "--metrics", "sensitivity", "--out", str(tmp_path / "o")])
    assert rc == 0
    row = json.loads((tmp_path / "o" / "explain.json").read_text())["metrics"]["models"]["std"]["vanilla"]
    assert set(row) == {"max_sensitivity", "lipschitz"}


def test_unknown_metric_group_is_one_line(tmp_path, capsys):
    with pytest.raises(UserError, match="did you mean 'faithfulness'"):
        parse_groups("faithfulnes")
    rc = main(["explain", "--checkpoint", str(tmp_path / "x.safetensors"), "--data", DATA, "--metrics", "speed", "--out", str(tmp_path / "o")])
    assert rc == 2 and "--metrics" in capsys.readouterr().err and not (tmp_path / "o").exists()
