"""`robustlens data`: summary per split and class, sample grids, data.json; user errors exit 2."""

from __future__ import annotations

import json

from helpers_data import write_image_folder
from robustlens.cli import main


def test_data_command_trifeature(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["data", "trifeature:n_train=40,n_test=20,n_conflict=20,size=48", "--out", str(out), "--n", "9"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "train: 40 images, 48x48, 3 channel(s), 10 classes" in text and "circle" in text
    info = json.loads((out / "data.json").read_text())
    assert set(info["splits"]) == {"train", "test", "conflict"}
    assert info["splits"]["test"]["per_class"] == [2] * 10
    assert info["splits"]["train"]["options"]["size"] == 48
    for split in ("train", "test", "conflict"):
        assert (out / f"samples_{split}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_command_folder_and_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ROBUSTLENS_CACHE", str(tmp_path / "cache"))
    write_image_folder(tmp_path / "d", splits=["train", "val"], per_class=2)
    rc = main(["data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--size", "8", "--split", "val"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "val: 4 images, 8x8, 3 channel(s), 2 classes" in text and "train:" not in text
    assert (tmp_path / "o" / "samples_val.png").exists()
    assert main(["data", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "missing: no such file or folder" in err and "Traceback" not in err
    assert not (tmp_path / "o2").exists()
    assert main(["data", str(tmp_path / "d"), "--format", "zip"]) == 2
    assert "valid formats" in capsys.readouterr().err
