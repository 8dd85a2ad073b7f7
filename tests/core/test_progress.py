"""The heartbeat of long work off a terminal: its format, its rate (fake clock), the bar on a tty."""

from __future__ import annotations

import io
import re

import pytest

from robustlens import progress
from robustlens.progress import HeartbeatConfig, Progress


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def beat():
    """A fake clock and a captured, non-terminal stream, restored afterwards."""
    clock, out = FakeClock(), io.StringIO()
    previous = progress.configure(HeartbeatConfig(every_s=30.0, clock=clock, stream=out, tty=False))
    yield clock, out
    progress.configure(previous)


def test_heartbeat_at_most_every_interval(beat):
    clock, out = beat
    with Progress("pgd linf eps=0.03137", total=1000) as p:
        for _ in range(100):  # one update a second for 100 s
            clock.t += 1.0
            p.update(10)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # at 30, 60, 90 s; nothing at the start
    assert lines[0].startswith("pgd linf eps=0.03137 | 300/1000 img (30%) | 30 s elapsed, ~70 s left")


def test_heartbeat_names_stage_step_images_and_time_left(beat):
    clock, out = beat
    with progress.stage("robustness"), Progress("pgd", total=2000) as p:
        clock.t += 24.0
        p.update(768, step="batch 3/8", robust="41.2%")
        clock.t += 6.0
        p.update(0)
    assert out.getvalue().splitlines() == [
        "[robustness] pgd | batch 3/8 | 768/2000 img (38%) | 30 s elapsed, ~48 s left | robust=41.2%"]


def test_rate_is_shared_by_nested_loops(beat):
    clock, out = beat
    outer = Progress("train", total=5, unit="epoch")
    for _ in range(5):
        with Progress("epoch", total=60, unit="batch") as inner:
            for _ in range(60):
                clock.t += 0.5
                inner.update(1)
        outer.update(1)
    assert len(out.getvalue().splitlines()) == 150 // 30


def test_interval_zero_writes_every_update(beat):
    clock, out = beat
    progress.configure(HeartbeatConfig(every_s=0.0, clock=clock, stream=out, tty=False))
    p = Progress("saliency", total=3, unit="map")
    for _ in range(3):
        clock.t += 2.0
        p.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"saliency \| 3/3 map \(100%\) \| 6 s elapsed, ~0 s left", lines[-1])


def test_no_time_left_before_any_work(beat):
    clock, out = beat
    p = Progress("featvis", total=0, unit="step")
    clock.t += 31.0
    p.update(0)
    assert out.getvalue().strip() == "featvis | 0 step | 31 s elapsed, time left unknown"  # no total: a count


def test_disabled_writes_nothing(beat):
    clock, out = beat
    p = Progress("x", total=10, enabled=False)
    clock.t += 100.0
    p.update(5)
    assert out.getvalue() == ""


def test_terminal_gets_a_tqdm_bar(beat):
    clock, out = beat
    progress.configure(HeartbeatConfig(every_s=0.0, clock=clock, stream=out, tty=True))
    with Progress("epoch 1/5", total=4, unit="batch") as p:
        assert p.bar is not None
        p.update(4, step="batch 4/4")
    text = out.getvalue()
    assert "epoch 1/5: 100%" in text and "4/4 [" in text  # tqdm's bar
    assert "elapsed" not in text  # and no heartbeat line


def test_environment_sets_the_interval(monkeypatch):
    monkeypatch.setenv("ROBUSTLENS_HEARTBEAT_S", "5")
    previous = progress.configure()
    try:
        assert progress._state.config.every_s == 5.0
    finally:
        progress.configure(previous)


def test_a_young_loop_waits_a_sixth_of_the_interval(beat):
    clock, out = beat
    with Progress("first", total=10) as p:
        clock.t += 40.0
        p.update(1)  # beats: 40 s in
    clock.t += 40.0
    with Progress("second", total=10) as q:
        clock.t += 1.0
        q.update(1)  # 41 s since the last line, but this loop is 1 s old: silent
        clock.t += 4.0
        q.update(1)  # 5 s old: beats
    assert [line.split(" | ")[0] for line in out.getvalue().splitlines()] == ["first", "second"]


def test_study_runner_names_the_stage_and_keeps_timings_of_a_killed_run(beat, tmp_path):
    import json

    from robustlens.study.runner import Runner, StageDef

    clock, out = beat
    progress.configure(HeartbeatConfig(every_s=0.0, clock=clock, stream=out, tty=False))

    def work(ctx):
        with Progress("probes", total=2) as p:
            clock.t += 1.0
            p.update(2)
        return {"ok": True}

    def dies(ctx):
        raise KeyboardInterrupt  # a run stopped in its second stage

    runner = Runner([StageDef("a", work), StageDef("b", dies, deps=("a",))], tmp_path / "run", version="t", stream=io.StringIO())
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert out.getvalue().splitlines() == ["[a] probes | 2/2 img (100%) | 1 s elapsed, ~0 s left"]
    timings = json.loads((tmp_path / "run" / "timings.json").read_text())
    assert timings["stages"] == {"a": {"status": "done", "seconds": timings["stages"]["a"]["seconds"]}}


def test_track_counts_items_names_the_step_and_closes_on_break(beat):
    clock, out = beat
    progress.configure(HeartbeatConfig(every_s=0.0, clock=clock, stream=out, tty=False))
    seen = []
    for i in progress.track(range(10), "construct robust", unit="chunk", step=lambda k: f"chunk {k}/10"):
        clock.t += 1.0
        seen.append(i)
        if i == 2:
            break
    assert seen == [0, 1, 2]
    assert out.getvalue().splitlines()[-1] == "construct robust | chunk 2/10 | 2/10 chunk (20%) | 2 s elapsed, ~8 s left"
    assert progress._state.active == []  # the break closed it


def test_track_disabled_is_silent(beat):
    clock, out = beat
    progress.configure(HeartbeatConfig(every_s=0.0, clock=clock, stream=out, tty=False))
    assert list(progress.track(iter([1, 2]), "x", enabled=False)) == [1, 2]
    assert out.getvalue() == ""


def _small_model():
    import torch

    from robustlens.models import create

    torch.manual_seed(0)
    return create("small_cnn", num_classes=4, width=4).eval()


@pytest.mark.parametrize("loop", ["featvis", "sanity", "generate", "sgd_fit"])
def test_long_loops_beat_off_a_terminal(beat, loop):
    """featvis, sanity, generation and the transfer / construct training loops write heartbeat
    lines when stderr is not a terminal (they showed tqdm on a terminal only)."""
    import torch

    clock, out = beat
    progress.configure(HeartbeatConfig(every_s=0.0, clock=clock, stream=out, tty=False))
    model = _small_model()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    if loop == "featvis":
        from robustlens.explain.featvis import visualize_channels

        visualize_channels(model, "body.0", [0], size=16, steps=3, progress=True)
        want = "featvis body.0 | 3/3 step (100%)"
    elif loop == "sanity":
        from robustlens.explain.sanity import parametrised_layers, randomization_test

        randomization_test(model, x, 0, method="vanilla", progress=True)
        k = len(parametrised_layers(model))  # 4 convs, 4 batch norms, the linear head
        want = f"sanity top_down | {k}/{k} layer (100%)"
    elif loop == "generate":
        from robustlens.explain.generate import generate

        generate(model, x, 1, eps=1.0, steps=3, progress=True)
        want = "generate | batch 1/1 | 3/3 step (100%)"
    else:
        from robustlens.transfer._loops import sgd_fit

        sgd_fit(model.train(), x, torch.tensor([0, 1]), epochs=2, batch_size=2, lr=0.01, show_progress=True, desc="train on robust")
        want = "train on robust | 2/2 step (100%)"
    assert any(line.startswith(want) for line in out.getvalue().splitlines()), out.getvalue()
