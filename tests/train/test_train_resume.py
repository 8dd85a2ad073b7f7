"""Resume: an interrupted run continues to bit-identical weights; mismatched configs are refused."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from helpers_train import toy_model
from robustlens.errors import UserError
from robustlens.train import TrainConfig, train

HERE = Path(__file__).parent


def _cfg(**kw):
    base = dict(mode="fgsm-rs", epochs=3, batch_size=32, lr=0.05, check_size=16, check_steps=2,
                log=False, progress=False, early_stop=False)
    base.update(kw)
    return TrainConfig(**base)


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _strip(history):
    return [{k: v for k, v in h.items() if "seconds" not in k and k != "images_per_s"} for h in history]


@pytest.fixture(scope="module")
def uninterrupted(resume_data):
    model = toy_model()
    result = train(model, resume_data, _cfg(), device="cpu")
    return model, result


def test_interrupted_mid_epoch_then_resumed_is_identical(resume_data, uninterrupted, tmp_path, monkeypatch):
    ref_model, ref_result = uninterrupted
    calls = {"n": 0}
    real_step = torch.optim.SGD.step

    def dying_step(self, *a, **k):  # a "kill" in the middle of epoch 2 (4 steps per epoch)
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(toy_model(), resume_data, _cfg(save_every=1), out_dir=tmp_path, device="cpu")
    monkeypatch.setattr(torch.optim.SGD, "step", real_step)
    saved = json.loads((tmp_path / "state.json").read_text())
    assert (saved["epoch"], saved["batch"], saved["step"]) == (1, 2, 6)

    fresh = toy_model(seed=123)  # other initial weights: everything must come from the state file
    result = train(fresh, resume_data, _cfg(save_every=1), out_dir=tmp_path, resume=True, device="cpu")
    assert result.resumed_from == {"epoch": 1, "batch": 2, "step": 6}
    _assert_same_weights(fresh, ref_model)
    assert _strip(result.history) == _strip(ref_result.history)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3]
    # Resuming a finished run does nothing more.
    again = toy_model(seed=5)
    r2 = train(again, resume_data, _cfg(), out_dir=tmp_path, resume=True, device="cpu")
    assert len(r2.history) == 3
    _assert_same_weights(again, ref_model)


def test_sigkill_mid_epoch_then_resume_is_identical(resume_data, uninterrupted, tmp_path):
    ref_model, _ = uninterrupted
    script = textwrap.dedent(f"""
        import sys, time, torch
        sys.path.insert(0, {str(HERE)!r})
        from helpers_train import toy_model, toy_set
        from robustlens.train import TrainConfig, train
        torch.set_num_threads({torch.get_num_threads()})  # same threads as this process: same float sums
        real = torch.optim.SGD.step
        def slow(self, *a, **k):   # slow steps so the parent can kill mid-epoch
            time.sleep(0.3)
            return real(self, *a, **k)
        torch.optim.SGD.step = slow
        cfg = TrainConfig(mode="fgsm-rs", epochs=3, batch_size=32, lr=0.05, check_size=16, check_steps=2,
                          log=False, progress=False, early_stop=False, save_every=1)
        train(toy_model(), toy_set(n=144, size=12), cfg, out_dir={str(tmp_path)!r}, device="cpu")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    state = tmp_path / "state.json"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if state.exists():
                try:
                    s = json.loads(state.read_text())
                except json.JSONDecodeError:
                    s = {}
                if s.get("step", 0) >= 5:
                    break
            if proc.poll() is not None:
                pytest.fail("the training subprocess ended before it could be killed")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    s = json.loads(state.read_text())
    assert 5 <= s["step"] < 12
    model = toy_model(seed=99)
    result = train(model, resume_data, _cfg(save_every=1), out_dir=tmp_path, resume=True, device="cpu")
    assert result.resumed_from["step"] == s["step"]
    _assert_same_weights(model, ref_model)


def test_resume_with_other_config_names_the_fields(resume_data, tmp_path):
    train(toy_model(), resume_data, _cfg(epochs=1), out_dir=tmp_path, device="cpu")
    with pytest.raises(UserError, match=r"another run.*batch_size: 32 -> 16.*lr: 0.05 -> 0.1") as e:
        train(toy_model(), resume_data, _cfg(epochs=1, lr=0.1, batch_size=16), out_dir=tmp_path, resume=True, device="cpu")
    assert "mode" not in str(e.value)
    # Bookkeeping (save_every, progress) may change.
    train(toy_model(), resume_data, _cfg(epochs=1, save_every=3, progress=True), out_dir=tmp_path, resume=True, device="cpu")
    # Another architecture width: the parameter count differs.
    with pytest.raises(UserError, match="parameters"):
        train(toy_model(width=8), resume_data, _cfg(epochs=1), out_dir=tmp_path, resume=True, device="cpu")


def test_non_finite_loss_stops_and_keeps_last_good_state(resume_data, tmp_path, monkeypatch):
    import torch.nn.functional as F

    real_ce = F.cross_entropy
    calls = {"n": 0}

    def ce(*a, **k):
        calls["n"] += 1
        out = real_ce(*a, **k)
        return out * float("nan") if calls["n"] == 6 else out

    monkeypatch.setattr(F, "cross_entropy", ce)
    cfg = _cfg(mode="std", check_size=0, epochs=3)  # 144 images / 32: 4 steps per epoch
    with pytest.raises(UserError, match=r"non-finite at step 5 \(epoch 2, batch 2\).*state.safetensors"):
        train(toy_model(), resume_data, cfg, out_dir=tmp_path, device="cpu")
    saved = json.loads((tmp_path / "state.json").read_text())
    assert (saved["epoch"], saved["batch"]) == (1, 0)
    assert (tmp_path / "last.safetensors").exists()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_needs_out(resume_data):
    with pytest.raises(UserError, match="--resume: needs --out"):
        train(toy_model(), resume_data, _cfg(epochs=1), resume=True, device="cpu")
