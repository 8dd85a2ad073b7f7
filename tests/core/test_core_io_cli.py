"""Core plumbing: atomic writes, JSON conversion, the CLI's error handling."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from robustlens import cli
from robustlens.errors import UserError
from robustlens.io import append_jsonl, atomic_path, read_json, versions, write_json_atomic


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "result.json"
    write_json_atomic(p, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("crash")
    assert json.loads(p.read_text()) == {"a": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["result.json"]  # no temp file left behind


def test_json_conversion_of_tensors_numpy_and_nonfinite(tmp_path):
    p = tmp_path / "x.json"
    write_json_atomic(p, {"t": torch.tensor([1.5, 2.0]), "n": np.float32(0.25), "i": np.int64(3), "nan": math.nan, "path": tmp_path})
    out = read_json(p)
    assert out == {"t": [1.5, 2.0], "n": 0.25, "i": 3, "nan": None, "path": str(tmp_path)}


def test_append_jsonl(tmp_path):
    p = tmp_path / "m.jsonl"
    append_jsonl(p, {"epoch": 0})
    append_jsonl(p, {"epoch": 1})
    assert [json.loads(line)["epoch"] for line in p.read_text().splitlines()] == [0, 1]


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="missing.json"):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="bad.json"):
        read_json(bad)


def test_versions_has_torch():
    v = versions()
    assert v["torch"] == torch.__version__ and "robustlens" in v


def test_help_lists_every_subcommand(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_user_error_is_one_line_exit_2(capsys, monkeypatch):
    class Fake:
        @staticmethod
        def configure(p):
            pass

        @staticmethod
        def run(args):
            raise UserError("--eps: expected a number, got 'x'")

    monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_module_for_test", "test"))
    monkeypatch.setitem(sys.modules, "fake_module_for_test", Fake)  # what importlib.import_module returns
    assert cli.main(["fake"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "robustlens fake: error: --eps: expected a number, got 'x'"
    assert "Traceback" not in err


def test_atomic_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    p = tmp_path / "report.html"
    write_json_atomic(p, {})
    mode = stat.S_IMODE(os.stat(p).st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask
