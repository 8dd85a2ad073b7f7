"""Sidecar checks that cannot be bypassed, and safe-loading messages (issue 16, items 13-15).

Each test failed on main before the fix: a 3-name class list for a 10-output model and a
sidecar with its id removed were accepted; ``width = -5`` and a non-numeric mean gave
tracebacks; the weights were written 0600 next to a 0644 sidecar; a protocol-4 pickle that
runs code was called "malformed".
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat

import pytest

from robustlens.errors import UserError
from robustlens.models import create
from robustlens.models.checkpoint import import_weights, load_checkpoint, save_checkpoint


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "a.safetensors"
    save_checkpoint(path, create("small_cnn", 10, width=4), {"classes": [f"c{i}" for i in range(10)]})
    return path


def _edited_copy(ckpt, tmp_path, edit, weights_from=None):
    """A copy of ``ckpt`` (x.safetensors + x.json) with ``edit`` applied to the sidecar."""
    sc = json.loads(ckpt.with_suffix(".json").read_text())
    edit(sc)
    out = tmp_path / "x.safetensors"
    shutil.copy(weights_from or ckpt, out)
    out.with_suffix(".json").write_text(json.dumps(sc))
    return out


def _one_line_error(path) -> str:
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_class_list_must_match_outputs(ckpt, tmp_path):
    bad = _edited_copy(ckpt, tmp_path, lambda sc: sc.__setitem__("classes", ["a", "b", "c"]))
    msg = _one_line_error(bad)
    assert "x.json" in msg and "3 class names" in msg and "10 outputs" in msg


def test_sidecar_without_id_is_not_paired_with_other_weights(ckpt, tmp_path):
    other = tmp_path / "b.safetensors"
    save_checkpoint(other, create("small_cnn", 10, width=4))
    bad = _edited_copy(ckpt, tmp_path, lambda sc: sc.pop("id"), weights_from=other)
    assert 'has no "id"' in _one_line_error(bad)


def test_bad_model_kwargs_are_one_line(ckpt, tmp_path):
    bad = _edited_copy(ckpt, tmp_path, lambda sc: sc["model_kwargs"].__setitem__("width", -5))
    msg = _one_line_error(bad)
    assert "model_kwargs" in msg and "-5" in msg


@pytest.mark.parametrize("mean", [["x", "y", "z"], [0.5, float("nan"), 0.5]])
def test_non_numeric_normalisation_is_one_line(ckpt, tmp_path, mean):
    bad = _edited_copy(ckpt, tmp_path, lambda sc: sc["normalize"].__setitem__("mean", mean))
    assert "normalisation" in _one_line_error(bad)


def test_weights_and_sidecar_get_the_same_permissions(ckpt):
    old = os.umask(0o022)
    try:
        save_checkpoint(ckpt, create("small_cnn", 10, width=4))
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(ckpt) == mode(ckpt.with_suffix(".json")) == 0o644


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_pickle_that_runs_code_is_named_as_such(tmp_path, protocol):
    marker = tmp_path / "ran"
    path = tmp_path / f"evil{protocol}.pt"
    path.write_bytes(pickle.dumps({"state_dict": _RunsCode(marker)}, protocol=protocol))
    with pytest.raises(UserError, match="would execute pickled code.*system"):
        import_weights(path, "small_cnn")
    assert not marker.exists()


def test_a_malformed_pickle_is_still_malformed(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(pickle.dumps({"w": [1, 2, 3]}, protocol=2)[:-5])
    with pytest.raises(UserError, match="not a readable PyTorch weights file"):
        import_weights(path, "small_cnn")
