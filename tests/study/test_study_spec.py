"""Study spec: defaults, validation (unknown key with suggestion and line, wrong type, paths)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from robustlens.errors import UserError
from robustlens.study.spec import DEFAULT_SPEC_PATH, Spec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]


def test_empty_spec_is_the_dataclass_default():
    assert parse_spec("").to_dict() == Spec().to_dict()


def test_embedded_default_and_example_equal_the_dataclass_defaults():
    assert load_spec(None).to_dict() == Spec().to_dict()
    assert load_spec(ROOT / "examples" / "trifeature.toml").to_dict() == Spec().to_dict()
    # Every dataclass field is spelled out in the embedded default.
    raw = tomllib.loads(DEFAULT_SPEC_PATH.read_text())
    d = Spec().to_dict()
    assert set(raw) == set(d) - {"models", "stages"} | {"models", "stages"}
    for stage, params in d["stages"].items():
        assert set(raw["stages"][stage]) == set(params), stage
    for m in ("std", "adv"):
        assert set(raw["models"][m]) == set(d["models"]["std"])


def test_defaults_are_the_papers_setting():
    s = Spec()
    assert s.data.source == "trifeature" and s.data.size == 32 and s.data.options["contrast"] == 0.06 and s.data.options["label"] == "texture"
    assert s.models["std"].mode == "std" and s.models["adv"].mode == "fgsm-rs"
    assert s.threat.norm == "linf" and s.threat.eps == "8/255"
    assert not s.stages.transfer.enabled and not s.stages.construct.enabled


def test_partial_spec_keeps_other_defaults():
    s = parse_spec('[stages.transforms]\nblur_sigmas = [0, 1]\n[models.adv]\nepochs = 3\n')
    assert s.stages.transforms.blur_sigmas == [0.0, 1.0]
    assert s.stages.transforms.median_kernel == 3
    assert s.models["adv"].epochs == 3 and s.models["adv"].mode == "fgsm-rs"


def test_unknown_key_names_table_suggestion_and_line():
    text = 'name = "x"\n\n[stages.transforms]\nn = 10\nblur_sigma = [1.0]\n'
    with pytest.raises(UserError) as e:
        parse_spec(text, "my.toml")
    msg = str(e.value)
    assert "my.toml:5" in msg and "'blur_sigma'" in msg and "[stages.transforms]" in msg and "'blur_sigmas'" in msg


def test_unknown_table_is_reported_with_its_line():
    with pytest.raises(UserError) as e:
        parse_spec('seed = 1\n[stages.robustnes]\nn = 3\n', "s.toml")
    assert "s.toml:2" in str(e.value) and "'robustness'" in str(e.value)


def test_unknown_top_level_key():
    with pytest.raises(UserError, match=r"s.toml:1: unknown key 'nmae'.*did you mean 'name'"):
        parse_spec('nmae = "x"\n', "s.toml")


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ('[stages.robustness]\nn = "many"\n', "stages.robustness.n", "an integer"),
        ('[stages.robustness]\nautoattack = 1\n', "stages.robustness.autoattack", "true/false"),
        ('[stages.transforms]\nblur_sigmas = ["a"]\n', "stages.transforms.blur_sigmas", "a list of a number"),
        ('[data]\nsize = 3.5\n', "data.size", "an integer"),
        ('seed = true\n', "seed", "an integer"),
    ],
)
def test_wrong_type_names_key_and_expected_type(text, key, expected):
    with pytest.raises(UserError) as e:
        parse_spec(text, "t.toml")
    assert key in str(e.value) and expected in str(e.value) and "t.toml:" in str(e.value)


def test_missing_data_path_fails(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('[data]\nsource = "no/such/cifar.tar.gz"\n')
    with pytest.raises(UserError, match=r"s.toml:2: data.source: data path 'no/such/cifar.tar.gz' does not exist"):
        load_spec(p)


def test_missing_checkpoint_and_bad_values(tmp_path):
    with pytest.raises(UserError, match="checkpoint 'nope.safetensors' does not exist"):
        parse_spec('[models.adv]\ncheckpoint = "nope.safetensors"\n', base_dir=tmp_path)
    with pytest.raises(UserError, match="did you mean 'fgsm-rs'"):
        parse_spec('[models.adv]\nmode = "fgsm_rs"\n')
    with pytest.raises(UserError, match="needs an adversarial mode"):
        parse_spec('[models.adv]\nmode = "std"\n')
    with pytest.raises(UserError, match="odd positive kernel"):
        parse_spec('[stages.transforms]\nmedian_kernel = 4\n')
    with pytest.raises(UserError, match="unknown method 'guidedbp'"):
        parse_spec('[stages.saliency]\nmethods = ["guidedbp"]\n')
    with pytest.raises(UserError, match="8/255"):
        parse_spec('[threat]\neps = "8//255"\n')
    with pytest.raises(UserError, match="not valid TOML"):
        parse_spec("[data\n")


def test_classes_mismatch_fails_before_training(tmp_path):
    from robustlens.study import run_study

    ck = tmp_path / "foreign.safetensors"
    ck.write_bytes(b"not used: the sidecar is checked first")
    ck.with_suffix(".json").write_text(json.dumps({"arch": "small_cnn", "num_classes": 3, "classes": ["a", "b", "c"]}))
    spec = parse_spec(
        f'name = "mismatch"\nout_dir = "{tmp_path / "runs"}"\n[data]\nn_train = 200\nn_test = 20\n'
        f'options = {{ contrast = 0.07, n_conflict = 8 }}\n[models.adv]\ncheckpoint = "{ck}"\n',
        "m.toml",
    )
    with pytest.raises(UserError, match=r"models.adv.checkpoint: .*predicts 3 classes but the data has 10"):
        run_study(spec, stream=open("/dev/null", "w"))
    stages = [p.name for p in (tmp_path / "runs" / "mismatch" / "stages").iterdir()]
    assert all(s.startswith("data-") for s in stages), stages  # nothing trained


def test_cli_reports_spec_errors_in_one_line(tmp_path, capsys):
    from robustlens import cli

    p = tmp_path / "bad.toml"
    p.write_text('[stages.saliency]\nmethod = ["vanilla"]\n')
    assert cli.main(["study", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.toml:2" in err and "'methods'" in err


# ----------------------------------------------------------------------------- transfer / construct


def _tc(text: str):
    return parse_spec("[stages.transfer]\nenabled = true\n" + text, "t.toml")


def test_transfer_second_backbones_are_trained_stages_or_named_models():
    from robustlens.study.stages import analysis_models, build_stages

    names = lambda s: {st.name: st for st in build_stages(s)}  # noqa: E731
    plain = names(parse_spec(""))
    st = names(_tc(""))
    assert st["train_transfer_std2"].params["spec"]["seed"] == 1 and st["train_transfer_adv2"].params["spec"]["mode"] == "fgsm-rs"
    assert set(st["transfer"].deps) == {"data", "train_std", "train_adv", "train_transfer_std2", "train_transfer_adv2"}
    assert st["transfer"].params["backbones"] == {"std": ["std", "transfer_std2"], "adv": ["adv", "transfer_adv2"]}
    # enabling transfer leaves the other stages (and their cache keys) untouched
    assert st["robustness"].deps == plain["robustness"].deps and st["train_std"].params == plain["train_std"].params
    # no repeated kind: no second model
    st = names(_tc('variants = ["std", "adv", "std+adv"]\n'))
    assert "train_transfer_std2" not in st and "train_transfer_adv2" not in st
    # a named second model is used, and kept out of the analysis stages
    s = _tc('second_std = "std2"\n[models.std2]\nseed = 7\n')
    st = names(s)
    assert st["transfer"].params["backbones"]["std"] == ["std", "std2"] and "train_transfer_std2" not in st
    assert analysis_models(s) == ["std", "adv"] and "train_std2" not in st["robustness"].deps


def test_helper_models_are_trained_only_when_a_stage_uses_them():
    from robustlens.study.stages import build_stages

    names = lambda text: {st.name for st in build_stages(parse_spec(text))}  # noqa: E731
    judge = '[models.judge]\nseed = 1\n[stages.generation]\njudge = "judge"\n'
    assert "train_judge" in names(judge)
    off = names(judge + "enabled = false\n")
    assert "train_judge" not in off and {"train_std", "train_adv", "robustness"} <= off
    # the judge doubling as the second STD backbone is still trained for the transfer stage
    both = names(judge + 'enabled = false\n[stages.transfer]\nenabled = true\nsecond_std = "judge"\n')
    assert "train_judge" in both and "generation" not in both
    # a model that is no helper is always trained (and analysed)
    assert "train_extra" in names(judge + "enabled = false\n[models.extra]\nseed = 3\n")


@pytest.mark.parametrize("text, fragment", [
    ('second_std = "nope"\n', "no model 'nope'"),
    ('second_std = "std"\n', "another model than models.std"),
    ('second_adv = "std2"\n[models.std2]\nseed = 1\n', "must be adversarially trained"),
    ('[models.transfer_std2]\nseed = 1\n', "set second_std = 'transfer_std2'"),
    ("sizes = []\n", "non-empty list"),
    ("repeats = 0\n", "positive integer"),
])
def test_bad_transfer_settings_are_refused(text, fragment):
    with pytest.raises(UserError) as e:
        _tc(text)
    assert fragment in str(e.value) and "stages.transfer" in str(e.value)


def test_transfer_needs_a_named_second_model_when_the_first_is_a_checkpoint(tmp_path):
    ck = tmp_path / "s.safetensors"
    ck.write_bytes(b"x")
    with pytest.raises(UserError) as e:
        parse_spec(f'[models.std]\ncheckpoint = "{ck}"\n[stages.transfer]\nenabled = true\n')
    assert "second_std" in str(e.value) and "checkpoint" in str(e.value)
    ok = parse_spec(f'[models.std]\ncheckpoint = "{ck}"\n[stages.transfer]\nenabled = true\nvariants = ["std", "std+adv"]\n')
    assert ok.stages.transfer.variants == ["std", "std+adv"]


@pytest.mark.parametrize("text, fragment", [
    ('datasets = ["robst"]\n', "did you mean 'robust'"),
    ("eps = 0\n", "positive number"),
    ('robust_init = "zeros"\n', "'image' or 'noise'"),
    ("steps = 0\n", "positive integer"),
    ('eval_threats = ["l3:0.25"]\n', "norm linf, l2 or l1"),
    ('eval_threats = ["0.25"]\n', "expected 'norm:eps'"),
    ('eval_threats = ["l2:-1"]\n', "eps >= 0"),
    ('eval_threats = ["l2:0"]\n', "positive eps"),
])
def test_bad_construct_settings_are_refused(text, fragment):
    with pytest.raises(UserError) as e:
        parse_spec("[stages.construct]\nenabled = true\n" + text, "c.toml")
    assert fragment in str(e.value) and "c.toml:" in str(e.value)


@pytest.mark.parametrize("value", ['[]', '["white"]', '["dark", "dark"]'])
def test_bad_shape_polarity_is_refused(value):
    with pytest.raises(UserError) as e:
        parse_spec(f"[stages.transforms]\nshape_polarity = {value}\n", "t.toml")
    assert "shape_polarity" in str(e.value) and "'dark' / 'light'" in str(e.value) and "t.toml:" in str(e.value)

def test_examples_parse_and_enable_transfer_and_construct():
    for name in ("cifar10", "imagenette", "trifeature_full"):
        path = ROOT / "examples" / f"{name}.toml"
        try:
            s = load_spec(path)
        except UserError as e:  # the real data sets live outside the repository
            assert "does not exist" in str(e) and name != "trifeature_full", e
            continue
        assert s.stages.transfer.enabled and s.stages.construct.enabled, name
    full = load_spec(ROOT / "examples" / "trifeature_full.toml")
    assert full.stages.transfer.sizes == [32, 64, 96] and full.stages.transfer.repeats == 3
def test_each_relative_path_is_found_beside_the_spec_or_in_the_current_folder(tmp_path, monkeypatch):
    """Data beside the spec, a checkpoint of an earlier run relative to where the command runs;
    a data set on disk gets no procedural options unless the spec gives some."""
    spec_dir, work = tmp_path / "examples", tmp_path / "work"
    (spec_dir / "data").mkdir(parents=True)
    (work / "runs").mkdir(parents=True)
    (work / "runs" / "adv.safetensors").write_bytes(b"")
    p = spec_dir / "s.toml"
    p.write_text('[data]\nsource = "data"\n[models.adv]\ncheckpoint = "runs/adv.safetensors"\n')
    monkeypatch.chdir(work)
    s = load_spec(p)
    assert Path(s.data.source) == spec_dir / "data"
    assert Path(s.models["adv"].checkpoint) == work / "runs" / "adv.safetensors"
    assert s.data.options == {}  # the default's texture contrast is the procedural set's
    assert parse_spec("").data.options == Spec().data.options and "contrast" in Spec().data.options
    p.write_text('[data]\nsource = "data"\noptions = { channels = 1 }\n[models.adv]\ncheckpoint = "gone.safetensors"\n')
    with pytest.raises(UserError, match=r"checkpoint 'gone.safetensors' does not exist \(looked at .*examples/gone.safetensors and .*work/gone.safetensors\)"):
        load_spec(p)
def test_cpu_profiles_parse():
    for name in ("cifar10_cpu", "cifar10_cpu_ilyas", "imagenette_cpu"):
        try:
            s = load_spec(ROOT / "examples" / f"{name}.toml")
        except UserError as e:  # the real data sets (and the profile's checkpoints) live outside the repository
            assert "does not exist" in str(e), e
            continue
        assert s.device == "cpu" and s.data.options == {}, name
def test_eps_grid_takes_fractions_and_stores_floats():
    s = parse_spec('[stages.robustness]\neps_grid = ["2/255", 0.1, 1]\n')
    assert s.stages.robustness.eps_grid == [pytest.approx(2 / 255), 0.1, 1.0]
    assert all(isinstance(e, float) for e in s.stages.robustness.eps_grid)
    with pytest.raises(UserError, match=r"s.toml:2: stages.robustness.eps_grid: .*8//255"):
        parse_spec('[stages.robustness]\neps_grid = ["8//255"]\n', "s.toml")
