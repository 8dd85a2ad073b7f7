"""``robustlens sweep`` and ``robustlens study --only``: the regime map alone, with nothing else
trained; its flags checked before any work (one line naming the flag, nothing written); the
stage is the study's own, so a rerun is cached."""

from __future__ import annotations

import json

import pytest

from robustlens.cli import main

TINY = ["--amplitudes", "3", "--agreements", "1", "--n-train", "160", "--n-test", "16", "--epochs", "1",
        "--width", "4", "--attack-steps", "1"]


def test_sweep_runs_only_the_regime_stage_and_reruns_cached(tmp_path, one_thread, capsys):
    assert main(["sweep", *TINY, "--out-dir", str(tmp_path)]) == 0
    run = tmp_path / "trifeature-regime"
    results = json.loads((run / "results.json").read_text())
    assert list(results["stages"]) == ["regime"]  # no data / train / analysis stage ran
    cells = results["results"]["regime"]["cells"]
    assert [(c["amplitude"], c["agreement"]) for c in cells] == [(3.0, 1.0)]
    assert set(cells[0]["claims"]) == {"clean_tradeoff", "robust_gain", "shape_bias"}
    assert all(0.0 <= cells[0][k]["clean"] <= 1.0 for k in ("std", "adv"))
    assert (run / "report.html").read_text().count("regime") > 0
    capsys.readouterr()
    assert main(["sweep", *TINY, "--out-dir", str(tmp_path)]) == 0
    assert "cached" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--agreements", "0.05,1"], "--agreements (stages.regime.agreements): expected shares in [0.1, 1]"),
    (["--amplitudes", "1,1"], "--amplitudes (stages.regime.amplitudes): expected a non-empty list of distinct"),
    (["--amplitudes", ""], "--amplitudes (stages.regime.amplitudes): expected a non-empty list"),
    (["--amplitudes", "a,b"], "--amplitudes: expected comma-separated numbers, got 'a,b'"),
    (["--amplitudes", "9"], "--amplitudes (stages.regime.amplitudes): expected amplitudes in (0, 6.38] eps"),
    (["--epochs", "0"], "--epochs (stages.regime.epochs): expected a positive integer, got 0"),
])
def test_sweep_bad_grid_is_one_line_and_writes_nothing(tmp_path, capsys, flags, message):
    assert main(["sweep", *flags, "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_study_only_names_a_stage_of_the_spec(tmp_path, capsys):
    assert main(["study", "--only", "robustnes", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--only: unknown stage (or one disabled in this spec) 'robustnes' (did you mean 'robustness'?)" in err
    assert list(tmp_path.iterdir()) == []
