"""CLI hardening (issue 16): a finished run is never replaced without --overwrite, an output
path is checked before any work, class sets are matched by name, one class is refused, and
bad numbers / names are one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustlens.cli import main

TRAIN = ["--data", "trifeature:n_train=64,n_test=16,n_conflict=0", "--size", "16", "--width", "4", "--epochs", "1",
         "--batch-size", "16", "--check-size", "0", "--quiet", "--device", "cpu"]


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_train_refuses_to_replace_a_finished_run(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    assert main(["train", *TRAIN, "--out", str(out)]) == 0
    before = {f: (out / f).read_bytes() for f in ("last.safetensors", "metrics.jsonl")}
    assert main(["train", *TRAIN, "--seed", "1", "--out", str(out)]) == 2
    assert "holds a finished result (state.safetensors); pass --overwrite" in _err(capsys)
    assert {f: (out / f).read_bytes() for f in before} == before  # untouched
    assert main(["train", *TRAIN, "--seed", "1", "--out", str(out), "--overwrite"]) == 0
    assert (out / "last.safetensors").read_bytes() != before["last.safetensors"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # the old run's lines are gone
    assert main(["train", *TRAIN, "--seed", "1", "--out", str(out), "--resume"]) == 0  # --resume still continues


def _folder(root: Path, classes: list[str], per_class: int = 4) -> str:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return str(root)


def _checkpoint(path: Path, classes: list[str]) -> str:
    from robustlens.models import create
    from robustlens.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(path, create("small_cnn", num_classes=len(classes), in_channels=3, width=4), {"classes": classes})
    return str(path)


def test_a_one_class_folder_is_not_trained(tmp_path, capsys):
    assert main(["train", "--data", _folder(tmp_path / "one", ["only"]), "--epochs", "1", "--batch-size", "2",
                 "--check-size", "0", "--quiet", "--device", "cpu"]) == 2
    assert "1 class (only); training a classifier needs at least 2 classes" in _err(capsys)


ATTACK = ["--split", "test", "--attack", "fgsm", "--eps", "1/255", "--device", "cpu", "--no-checks"]


def test_attack_matches_classes_by_name(tmp_path, capsys):
    """A 10-class checkpoint on a 2-class folder of other names is refused (it scored 0% with rc 0);
    a folder whose classes are a permutation (or a subset) of the checkpoint's is mapped by name."""
    ten = _checkpoint(tmp_path / "ten.safetensors", [f"c{i}" for i in range(10)])
    assert main(["attack", "--checkpoint", ten, "--data", _folder(tmp_path / "ab", ["a", "b"]), *ATTACK]) == 2
    assert "classes 'a', 'b' are not among the 10 classes" in _err(capsys)
    abc = _checkpoint(tmp_path / "abc.safetensors", ["a", "b", "c"])
    folder = _folder(tmp_path / "abc", ["a", "b", "c"])
    assert main(["attack", "--checkpoint", abc, "--data", folder, *ATTACK, "--out", str(tmp_path / "same.json")]) == 0
    cba = _checkpoint(tmp_path / "cba.safetensors", ["c", "b", "a"])  # the same weights, the names reversed
    rev = tmp_path / "rev"
    for c, d in zip(["a", "b", "c"], ["c", "b", "a"]):  # each folder renamed after the class the model calls it
        (Path(folder) / "test" / c).rename((rev / "test").mkdir(parents=True, exist_ok=True) or rev / "test" / d)
    (rev / "train").mkdir()
    assert main(["attack", "--checkpoint", cba, "--data", str(rev), *ATTACK, "--out", str(tmp_path / "rev.json")]) == 0
    import json

    same, mapped = (json.loads((tmp_path / f).read_text())["metrics"] for f in ("same.json", "rev.json"))
    assert mapped["clean_accuracy"] == same["clean_accuracy"]


def _file(tmp_path: Path) -> Path:
    f = tmp_path / "a_file"
    f.write_text("x")
    return f


@pytest.mark.parametrize("command", ["train", "attack", "explain", "probe", "transfer", "construct", "models"])
def test_an_unwritable_out_fails_before_any_work(tmp_path, capsys, command):
    """``--out`` under a regular file: one line naming --out, before any model or data is read
    (the checkpoint given does not even exist: the output check comes first)."""
    bad = str(_file(tmp_path) / "sub" / ("x.json" if command == "attack" else "x.safetensors" if command == "models" else "out"))
    ck = str(tmp_path / "missing.safetensors")
    argv = {
        "train": ["train", *TRAIN, "--out", bad],
        "attack": ["attack", "--checkpoint", ck, "--data", "trifeature", "--out", bad],
        "explain": ["explain", "--checkpoint", ck, "--data", "trifeature", "--out", bad],
        "probe": ["probe", "--checkpoint", ck, "--data", "trifeature", "--out", bad],
        "transfer": ["transfer", "--backbone", f"std={ck}", "--target", "trifeature", "--out", bad],
        "construct": ["construct", "--kind", "det", "--checkpoint", ck, "--data", "trifeature", "--out", bad],
        "models": ["models", "--import", ck, "--arch", "small_cnn", "--out", bad],
    }[command]
    assert main(argv) == 2
    line = _err(capsys)
    assert f"--out {bad}: cannot write there" in line and "a_file is a file" in line


@pytest.mark.parametrize("command, result", [("attack", "r.json"), ("explain", "explain.json"), ("probe", "probe.json"),
                                              ("transfer", "results.json")])
def test_a_finished_result_is_kept_without_overwrite(tmp_path, capsys, command, result):
    out = tmp_path / ("r.json" if command == "attack" else "out")
    target = out if command == "attack" else out / result
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("{}")
    ck = str(tmp_path / "missing.safetensors")
    argv = {"attack": ["attack", "--checkpoint", ck, "--data", "trifeature"],
            "explain": ["explain", "--checkpoint", ck, "--data", "trifeature"],
            "probe": ["probe", "--checkpoint", ck, "--data", "trifeature"],
            "transfer": ["transfer", "--backbone", f"std={ck}", "--target", "trifeature"]}[command]
    assert main([*argv, "--out", str(out)]) == 2
    assert f"{result}); pass --overwrite" in _err(capsys) and target.read_text() == "{}"


def test_bad_numbers_and_names_are_one_line(tmp_path, capsys):
    for argv in (["transfer", "--backbone", "std=a", "--target", "t", "--out", str(tmp_path / "o"), "--lr=-1"],
                 ["transfer", "--backbone", "std=a", "--target", "t", "--out", str(tmp_path / "o"), "--lr", "nan"],
                 ["construct", "--kind", "det", "--checkpoint", "a", "--data", "t", "--out", str(tmp_path / "o"), "--lr", "0"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and "expected a positive number" in capsys.readouterr().err
    ck = _checkpoint(tmp_path / "m.safetensors", [f"c{i}" for i in range(10)])
    for command in ("explain", "probe"):
        assert main([command, "--checkpoint", ck, "--name", "../evil", "--data", "trifeature", "--out", str(tmp_path / command)]) == 2
        assert "--name '../evil': use letters, digits" in _err(capsys)
