"""The regime stage: the grid is checked before any work (one-line errors naming the key, nothing
written), a tiny map runs end to end with the claims' own rules per cell, a finished cell is
reused from the work folder (resume), and the spec's clip bound is the generator's."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from robustlens.errors import UserError
from robustlens.study import load_spec, run_study

OFF = "".join(f"[stages.{s}]\nenabled = false\n" for s in
              ("robustness", "transforms", "bias", "neurons", "saliency", "featvis", "sanity", "localisation", "generation"))
SPEC = """
name = "regime"
out_dir = "{out}"
[data]
n_train = 200
n_test = 32
[models.std]
epochs = 1
arch_options = {{ width = 4 }}
train_options = {{ check_size = 0 }}
[models.adv]
epochs = 1
arch_options = {{ width = 4 }}
train_options = {{ check_size = 0 }}
""" + OFF + """[stages.regime]
enabled = true
amplitudes = {amplitudes}
agreements = {agreements}
n_train = 160
n_test = 20
epochs = 1
width = 4
attack_steps = 1
"""


def _spec(folder: Path, amplitudes="[1.0, 3.0]", agreements="[1.0]") -> Path:
    p = folder / "regime.toml"
    p.write_text(SPEC.format(out=folder / "runs", amplitudes=amplitudes, agreements=agreements))
    return p


@pytest.mark.parametrize("amplitudes, agreements, key", [
    ("[]", "[1.0]", "amplitudes"),             # an empty grid
    ("[1.0]", "[]", "agreements"),
    ("[1.0]", "[1.2]", "agreements"),          # agrees more often than always
    ("[7.0]", "[1.0]", "amplitudes"),          # 7 x 8/255 = 0.22 clips the colours
    ("[1.0, 1.0]", "[1.0]", "amplitudes"),     # a repeated cell
])
def test_bad_grid_is_one_line_error_and_nothing_written(tmp_path, amplitudes, agreements, key):
    with pytest.raises(UserError, match=rf"stages\.regime.*{key}") as e:
        load_spec(_spec(tmp_path, amplitudes, agreements))
    assert "\n" not in str(e.value).strip()
    assert not (tmp_path / "runs").exists()


def test_spec_clip_bound_is_the_generators():
    from robustlens.data.trifeature import MAX_CONTRAST
    from robustlens.study.spec import TRIFEATURE_MAX_CONTRAST

    assert TRIFEATURE_MAX_CONTRAST == MAX_CONTRAST


def test_cell_options_set_the_class_and_the_agreement():
    from robustlens.data.trifeature import TrifeatureConfig, agreement
    from robustlens.study.stages.regime import cell_options

    p = {"n_train": 10, "n_test": 5}
    opts = cell_options({"scale_min": 0.4, "scale_max": 0.5}, 1.9, 0.865, 8 / 255, p)
    cfg = TrifeatureConfig.from_options(opts)
    assert cfg.label == "texture" and cfg.contrast == pytest.approx(1.9 * 8 / 255, abs=1e-6)
    assert agreement(cfg.shape_corr) == pytest.approx(0.865) and cfg.scale_min == 0.4


def test_tiny_regime_map_runs_and_reuses_finished_cells(tmp_path, one_thread):
    spec = load_spec(_spec(tmp_path))
    run_study(spec, stream=io.StringIO())
    results = json.loads((tmp_path / "runs" / "regime" / "results.json").read_text())
    r = results["results"]["regime"]
    assert len(r["cells"]) == 2 and {c["amplitude"] for c in r["cells"]} == {1.0, 3.0}
    for c in r["cells"]:
        assert set(c["claims"]) == {"clean_tradeoff", "robust_gain", "shape_bias"}
        for kind in ("std", "adv"):
            assert 0 <= c[kind]["robust"] <= c[kind]["clean"] <= 1 and 0 <= c[kind]["shape_bias"] <= 1
    stage = next((tmp_path / "runs" / "regime" / "stages").glob("regime-*"))
    assert (stage / "regime.png").stat().st_size > 1000
    assert 'id="regime"' in (tmp_path / "runs" / "regime" / "report.html").read_text()


def test_finished_cell_is_read_back_not_recomputed(tmp_path):
    from types import SimpleNamespace

    from robustlens.study.stages.regime import _cell

    cell = {"amplitude": 1.0, "agreement": 1.0, "std": {}, "adv": {}, "claims": {}}
    (tmp_path / "cell3").mkdir()
    (tmp_path / "cell3" / "cell.json").write_text(json.dumps(cell))
    ctx = SimpleNamespace(work=tmp_path)  # no data, no models: a recomputation would fail
    assert _cell(ctx, 3, 1.0, 1.0, 8 / 255) == cell


def test_default_study_world_and_example_file():
    """The embedded default is the seeds' world, stated in words; examples/trifeature.toml is
    the embedded default.toml byte for byte."""
    from robustlens.data.trifeature import TrifeatureConfig
    from robustlens.study.spec import DEFAULT_SPEC_PATH, Spec

    root = Path(__file__).resolve().parents[2]
    assert (root / "examples" / "trifeature.toml").read_bytes() == DEFAULT_SPEC_PATH.read_bytes()
    spec = Spec()
    text = TrifeatureConfig.from_options(spec.data.options).describe(8 / 255)
    assert text.startswith("the class is the texture (amplitude 0.060 = 1.9 eps)")
    assert "the shape agrees with it 86.5% of the time" in text
