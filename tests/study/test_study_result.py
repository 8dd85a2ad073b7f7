"""StageResult (what a stage returns) and the stage modules' contract; the chart helpers of
robustlens.plot the stages draw with; spec errors for unknown names."""

from __future__ import annotations

import io
import json

import pytest

from robustlens.errors import UserError
from robustlens.study.result import PARTS, StageResult
from robustlens.study.runner import Runner, StageDef


def test_to_dict_writes_numbers_then_the_parts_in_order():
    r = StageResult({"n": 3, "models": {"a": 1}}, summary="s", figures={"f": "f.png"}, captions={"f": "c"},
                    order=("notes", "figures", "summary", "tables", "captions"))
    assert list(r.to_dict()) == ["n", "models", "figures", "summary", "captions"]  # unset parts are absent
    back = StageResult.from_dict(r.to_dict())
    assert back.to_dict() == r.to_dict() and list(back.to_dict()) == list(r.to_dict())
    assert back.numbers == {"n": 3, "models": {"a": 1}} and back.caption("f") == "c" and back.caption("g") == "g"


def test_stage_result_refuses_a_bad_order_and_parts_among_the_numbers():
    with pytest.raises(ValueError, match="order"):
        StageResult(order=("summary",))
    with pytest.raises(ValueError, match="summary"):
        StageResult({"summary": "x"})
    assert len(PARTS) == 5


def test_runner_writes_a_stage_result_as_result_json(tmp_path):
    stages = [StageDef("a", lambda ctx: StageResult({"x": 1.5}, summary="one", figures={}))]
    out = Runner(stages, tmp_path, version="t", stream=io.StringIO()).run()
    assert json.loads((out["a"].dir / "result.json").read_text()) == {"x": 1.5, "summary": "one", "figures": {}}
    assert out["a"].stage_result().summary == "one" and out["a"].reason == ""


def test_every_stage_module_has_a_name_params_deps_and_run(tmp_path):
    from robustlens.study.spec import parse_spec
    from robustlens.study.stages import build_stages, dag

    cue = tmp_path / "cue"
    (cue / "cat").mkdir(parents=True)
    (cue / "cat" / "cat1-dog1.png").write_bytes(b"")  # the stimuli stage checks names only when the DAG is built
    spec = parse_spec("[stages.transfer]\nenabled = true\n[stages.construct]\nenabled = true\n[stages.regime]\nenabled = true\n"
                      f"[stages.stimuli]\nenabled = true\ncue_conflict = \"{cue}\"\n")
    built = {s.name: s for s in build_stages(spec)}
    for mod in dag.ANALYSIS:
        assert callable(mod.run) and isinstance(mod.params(spec), dict) and isinstance(mod.deps(spec), tuple)
        assert built[mod.NAME].fn is mod.run and set(built[mod.NAME].deps) == set(mod.deps(spec))


def test_old_stage_helpers_stay_importable():
    from robustlens.study.stages import (SEED_OFFSETS, STAGE_CODE, check_checkpoint_classes, file_sha256,  # noqa: F401
                                         implementations, load_data, spec_device, stage_train)

    assert SEED_OFFSETS["construct"] == 21 and STAGE_CODE == 6
    # part of the stage hashes: the same whether fusion is a module or a package
    assert implementations("transfer") == ["transfer/fusion.py"] and implementations("data") == []
    with pytest.raises(UserError, match="predicts 3 classes but the data has 2"):
        check_checkpoint_classes("m", {"num_classes": 3}, ["a", "b"], "models.x")


def test_chart_helpers_write_pngs_atomically(tmp_path):
    from robustlens.plot import bar_chart, line_chart

    p = bar_chart({"std": [0.5, None], "adv": [0.4, 0.3]}, ["clean", "pgd"], tmp_path / "b.png", value_labels=True)
    q = line_chart({"std": [[0.0, 0.9], [1.0, None]]}, tmp_path / "l.png", xlabel="eps", ylim=(0, 1))
    assert p.read_bytes()[:4] == q.read_bytes()[:4] == b"\x89PNG"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["b.png", "l.png"]  # no temporary file left


@pytest.mark.parametrize("text, hint", [
    ('[stages.transfer]\nvariants = ["std+ad"]\n', "unknown variant 'std+ad' (did you mean 'std+adv'?)"),
    ('[stages.localisation]\nmethod = "gradcm"\n', "unknown method 'gradcm' (did you mean 'gradcam'?)"),
    ('[models.adv]\nmode = "pgdd"\n', "unknown training mode 'pgdd' (did you mean 'pgd'?)"),
])
def test_unknown_names_get_the_registry_close_match(text, hint):
    from robustlens.study.spec import parse_spec

    with pytest.raises(UserError) as e:
        parse_spec(text, "u.toml")
    assert hint in str(e.value) and "valid:" in str(e.value) and "u.toml:" in str(e.value)
