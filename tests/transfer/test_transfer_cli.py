"""``robustlens transfer`` / ``robustlens construct``: bad input gives one-line errors (exit 2);
with checkpoints, both commands run end to end and write JSON (construct resumes)."""

from __future__ import annotations

import json

import pytest
import torch

from helpers_transfer import tiny_model
from robustlens.cli import main
from robustlens.transfer.cli import parse_backbones, parse_target

TINY = "trifeature:n_train=30,n_test=20,n_conflict=10"


def test_parse_helpers():
    assert parse_backbones(["std=a.st", "STD=b.st", "adv=c.st"]) == {"std": ["a.st", "b.st"], "adv": ["c.st"]}
    assert parse_target("trifeature:size=32") == ("trifeature:size=32", None)
    assert parse_target("/data/cifar.tar.gz@64") == ("/data/cifar.tar.gz", 64)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backbone", "std=a", "--target", "trifeature", "--variants", "std+std"], "needs two different 'std'"),
        (["--backbone", "std=a", "--backbone", "adv=b", "--variants", "std+adv"], "no target"),
        (["--backbone", "a.safetensors", "--target", "trifeature"], "KIND=CHECKPOINT"),
        (["--target", "trifeature"], "no backbone"),
        (["--backbone", "std=missing.safetensors", "--target", "trifeature", "--variants", "std"], "file not found"),
        (["--backbone", "std=a", "--target", "trifeature", "--variants", "std+adv+std"], "not a variant"),
    ],
)
def test_transfer_bad_input(argv, message, capsys, tmp_path):
    assert main(["transfer", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_construct_bad_input(capsys, tmp_path):
    assert main(["construct", "--kind", "det", "--checkpoint", str(tmp_path / "none.safetensors"), "--data", TINY, "--out", str(tmp_path / "o")]) == 2
    assert "file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--train-eval", "--eval-threat", "l3:0.5"], "--eval-threat: expected 'norm:eps'"),
        (["--train-eval", "--eval-threat", "l2:-1"], "--eval-threat"),
        (["--train-eval", "--eval-eps", "eight"], "--eval-eps"),
        (["--baseline"], "add --train-eval"),
        (["--eval-threat", "l2:0.5"], "add --train-eval"),
    ],
)
def test_construct_bad_evaluation_settings_fail_before_constructing(extra, message, capsys, tmp_path):
    ck = _save(tmp_path / "std.safetensors", tiny_model(0))
    out = tmp_path / "o"
    argv = ["construct", "--kind", "det", "--checkpoint", str(ck), "--data", TINY, "--size", "16", "--n", "4", "--steps", "1", "--out", str(out)]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing was constructed or written


def _save(path, model):
    ckpt = pytest.importorskip("robustlens.models.checkpoint")
    ckpt.save_checkpoint(path, model, {"training": {"mode": "std"}})
    return path


def test_transfer_end_to_end(tmp_path, capsys):
    paths = [_save(tmp_path / f"m{i}.safetensors", tiny_model(i)) for i in range(3)]
    out = tmp_path / "fusion"
    argv = ["transfer", "--backbone", f"std={paths[0]}", "--backbone", f"std={paths[1]}", "--backbone", f"adv={paths[2]}",
            "--target", f"{TINY},size=16", "--target", f"{TINY},size=24", "--variants", "std,std+std,std+adv", "--repeats", "2",
            "--epochs", "2", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["table"]) == 6 and [t["resolution"] for t in res["config"]["targets"]] == [16, 24]
    assert (out / "fusion.png").exists() and (out / "table.csv").exists()
    # a backbone trained for other classes
    _save(tmp_path / "c5.safetensors", tiny_model(4, num_classes=5))
    bad = ["transfer", "--backbone", f"std={paths[0]}", "--backbone", f"adv={tmp_path / 'c5.safetensors'}", "--target", TINY, "--variants", "std+adv", "--out", str(tmp_path / "fusion2")]
    assert main(bad) == 2 and "classes" in capsys.readouterr().err


def test_construct_end_to_end_and_resume(tmp_path):
    ck = _save(tmp_path / "std.safetensors", tiny_model(0))
    out = tmp_path / "det"
    argv = ["construct", "--kind", "det", "--checkpoint", str(ck), "--data", TINY, "--size", "16", "--n", "12", "--steps", "3",
            "--chunk-size", "5", "--out", str(out)]
    assert main(argv) == 0
    first = (out / "data.npz").read_bytes()
    assert sorted(p.name for p in (out / "chunks").iterdir()) == ["chunk_00000.npz", "chunk_00001.npz", "chunk_00002.npz"]
    (out / "data.npz").unlink()  # as if the run stopped before the final file
    (out / "chunks" / "chunk_00002.npz").unlink()
    assert main(argv + ["--train-eval", "--epochs", "1", "--eval-steps", "2", "--baseline",
                        "--eval-threat", "l2:0.25", "--eval-threat", "linf:2/255"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["construct"]["kind"] == "det" and res["n"] == 12 and 0 <= res["trained_on_constructed"]["test_clean_accuracy"] <= 1
    # both fresh models (on D_det and, --baseline, on the same original images) are evaluated at
    # every threat and saved; a saved model gives back the reported clean accuracy
    from robustlens.data import load
    from robustlens.models.checkpoint import load_checkpoint

    test = load(TINY, split="test", size=16)
    for key, fname in (("trained_on_constructed", "trained.safetensors"), ("trained_on_original", "baseline.safetensors")):
        ev = res[key]
        assert [(e["norm"], e["eps"]) for e in ev["extra_threats"]] == [("l2", 0.25), ("linf", pytest.approx(2 / 255))]
        assert all(0 <= e["robust_accuracy"] <= ev["test_clean_accuracy"] for e in ev["extra_threats"])
        assert ev["checkpoint"] == str(out / fname)
        model, meta = load_checkpoint(out / fname)
        with torch.no_grad():
            acc = (model.eval()(test.float()).argmax(1) == test.labels).float().mean().item()
        assert acc == pytest.approx(ev["test_clean_accuracy"], abs=1e-6) and meta["classes"] == list(test.classes)
    c = res["construction"]
    assert c["n"] == 12 and c["label_changed"] == 1.0 and 0 <= c["target_success"] <= 1 and c["mean_l2"] <= 0.5 + 1e-4
    assert res["figure"] == "accuracy.png" and (out / "accuracy.png").stat().st_size > 1000
    assert res["trained_on_original"]["train_agreement_with_original_labels"] == res["trained_on_original"]["train_accuracy_constructed_labels"]
    import numpy as np

    with np.load(out / "data.npz") as a:
        import io

        with np.load(io.BytesIO(first)) as b:
            assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["labels"], b["labels"])
