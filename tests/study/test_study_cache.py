"""The stage cache: hashes follow the DAG, stage folders are atomic, a crash resumes.

Uses cheap fake stages (no torch), so these tests run in well under a second.
"""

from __future__ import annotations

import io
import json

import pytest

from robustlens.study.runner import NotMeasured, Runner, StageDef, plan_hashes, stage_hash, topological


def _dag(calls: list[str], params: dict | None = None, fail_in: str | None = None) -> list[StageDef]:
    params = params or {}

    def make(name: str):
        def fn(ctx):
            calls.append(name)
            (ctx.out / "part.txt").write_text("partial")
            if fail_in == name:
                raise RuntimeError(f"crash in {name}")
            total = sum(d.result["value"] for d in ctx.deps.values())
            return {"value": total + ctx.params.get("k", 1)}

        return fn

    return [
        StageDef("data", make("data"), {"k": params.get("data", 1)}),
        StageDef("train", make("train"), {"k": params.get("train", 1)}, ("data",)),
        StageDef("probe_a", make("probe_a"), {"k": params.get("probe_a", 1)}, ("train",)),
        StageDef("probe_b", make("probe_b"), {"k": params.get("probe_b", 1)}, ("train", "data")),
    ]


def _run(tmp_path, calls, **kw):
    return Runner(_dag(calls, **kw), tmp_path / "run", version="t", stream=io.StringIO()).run()


def test_hash_depends_on_name_params_deps_and_version():
    h = stage_hash("a", {"x": 1}, {"d": "abc"}, "1")
    assert h == stage_hash("a", {"x": 1}, {"d": "abc"}, "1")
    assert len({h, stage_hash("b", {"x": 1}, {"d": "abc"}, "1"), stage_hash("a", {"x": 2}, {"d": "abc"}, "1"),
                stage_hash("a", {"x": 1}, {"d": "abd"}, "1"), stage_hash("a", {"x": 1}, {"d": "abc"}, "2")}) == 5
    # key order inside params does not matter
    assert stage_hash("a", {"x": 1, "y": 2}, {}, "1") == stage_hash("a", {"y": 2, "x": 1}, {}, "1")


def test_changed_parameter_changes_only_downstream_hashes():
    base = plan_hashes(_dag([]), "t")
    for changed, affected in (("probe_a", {"probe_a"}), ("train", {"train", "probe_a", "probe_b"}),
                              ("data", {"data", "train", "probe_a", "probe_b"}), ("probe_b", {"probe_b"})):
        new = plan_hashes(_dag([], params={changed: 5}), "t")
        assert {k for k in base if base[k] != new[k]} == affected, changed


def test_topological_order_and_cycle_detection():
    order = [s.name for s in topological(list(reversed(_dag([]))))]
    assert order.index("data") < order.index("train") < order.index("probe_a")
    with pytest.raises(ValueError, match="cycle"):
        topological([StageDef("a", lambda c: {}, deps=("b",)), StageDef("b", lambda c: {}, deps=("a",))])


def test_rerun_is_fully_cached_and_changed_parameter_reruns_dependents_only(tmp_path):
    calls: list[str] = []
    first = _run(tmp_path, calls)
    assert calls == ["data", "train", "probe_a", "probe_b"]
    assert first["probe_b"].result == {"value": 3 + 1}  # train (2) + data (1) + 1
    calls.clear()
    again = _run(tmp_path, calls)
    assert calls == [] and all(o.status == "cached" for o in again.values())
    assert {k: o.result for k, o in again.items()} == {k: o.result for k, o in first.items()}
    calls.clear()
    _run(tmp_path, calls, params={"train": 7})
    assert calls == ["train", "probe_a", "probe_b"]


def test_stage_folders_are_atomic_and_a_crash_resumes_at_that_stage(tmp_path):
    calls: list[str] = []
    with pytest.raises(RuntimeError, match="crash in probe_a"):
        _run(tmp_path, calls, fail_in="probe_a")
    stages = tmp_path / "run" / "stages"
    names = sorted(p.name for p in stages.iterdir())
    # data and train finished (with done.json); probe_a left neither a final folder nor a temp one
    assert [n.split("-")[0] for n in names] == ["data", "train"]
    for n in names:
        assert json.loads((stages / n / "done.json").read_text())["stage"] == n.split("-")[0]
        assert (stages / n / "result.json").exists()
    # A temp folder left by a killed process (no exception handler ran) is discarded.
    runner = Runner(_dag([]), tmp_path / "run", version="t", stream=io.StringIO())
    stale = stages / f".tmp-probe_a-{runner.hashes['probe_a']}"
    stale.mkdir()
    (stale / "garbage.txt").write_text("half")
    calls.clear()
    out = _run(tmp_path, calls)
    assert calls == ["probe_a", "probe_b"]
    assert out["data"].status == "cached" and out["probe_a"].status == "done"
    assert not stale.exists()
    assert not (runner.stage_dir("probe_a") / "garbage.txt").exists()


def test_a_folder_without_done_json_is_not_trusted(tmp_path):
    calls: list[str] = []
    _run(tmp_path, calls)
    runner = Runner(_dag([]), tmp_path / "run", version="t", stream=io.StringIO())
    (runner.stage_dir("probe_b") / "done.json").unlink()
    calls.clear()
    # the final folder exists but is incomplete: the stage reruns and keeps its result
    import shutil

    shutil.rmtree(runner.stage_dir("probe_b"))
    _run(tmp_path, calls)
    assert calls == ["probe_b"]


def test_not_measured_is_not_cached_and_propagates(tmp_path):
    def missing(ctx):
        raise NotMeasured("module robustlens.x is not available")

    stages = [StageDef("data", lambda c: {"value": 1}), StageDef("attack", missing, deps=("data",)),
              StageDef("report_part", lambda c: {"value": 2}, deps=("attack",))]
    out = Runner(stages, tmp_path / "r", version="t", stream=io.StringIO()).run()
    assert out["attack"].status == "not_measured" and "not available" in out["attack"].result["reason"]
    assert out["report_part"].status == "not_measured" and "attack" in out["report_part"].result["reason"]
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "r" / "stages").iterdir()) == ["data"]


def test_progress_lines_one_per_stage(tmp_path):
    s = io.StringIO()
    Runner(_dag([]), tmp_path / "run", version="t", stream=s).run()
    s2 = io.StringIO()
    Runner(_dag([]), tmp_path / "run", version="t", stream=s2).run()
    lines = s2.getvalue().strip().splitlines()
    assert len(lines) == 4 and all("cached" in ln for ln in lines)
    assert "done in" in s.getvalue()
