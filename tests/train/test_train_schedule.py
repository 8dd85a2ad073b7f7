"""Learning-rate schedules give the documented values at known steps."""

import math

import numpy as np
import pytest

from robustlens.errors import UserError
from robustlens.train.schedule import Schedule


def test_step_schedule_main_paper():
    # x0.1 every 30 of 90 epochs (Itazuri et al., ImageNet): 0.1 -> 0.01 at epoch 30 -> 0.001 at 60.
    s = Schedule("step", 0.1, epochs=90, steps_per_epoch=10, milestones=(30, 60))
    assert s(0) == pytest.approx(0.1)
    assert s(30 * 10 - 1) == pytest.approx(0.1)
    assert s(30 * 10) == pytest.approx(0.01)
    assert s(60 * 10 - 1) == pytest.approx(0.01)
    assert s(60 * 10) == pytest.approx(0.001)
    assert s(90 * 10 - 1) == pytest.approx(0.001)


def test_step_default_milestones_from_config():
    from robustlens.train import TrainConfig

    c = TrainConfig(schedule="step", epochs=90, lr=0.1, batch_size=8).resolve("imagenet")
    assert c.milestones == (30, 60)


def test_cyclic_matches_fast_adversarial_and_peaks_at_two_fifths():
    epochs, spe, lr = 15, 20, 0.2
    s = Schedule("cyclic", lr, epochs, spe)
    steps = np.arange(epochs * spe)
    ours = np.array([s(int(i)) for i in steps])
    # fast_adversarial train_fgsm.py: np.interp([t], [0, epochs * 2 / 5, epochs], [0, lr_max, 0]),
    # t = epoch + (i + 1) / len(loader).
    ref = np.interp((steps + 1) / spe, [0, epochs * 2 / 5, epochs], [0, lr, 0])
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)
    peak = int(np.argmax(ours))
    assert (peak + 1) / spe == pytest.approx(0.4 * epochs)
    assert ours[peak] == pytest.approx(lr)
    assert ours[-1] == pytest.approx(0.0, abs=1e-12)
    assert Schedule("onecycle", lr, epochs, spe)(peak) == pytest.approx(lr)


def test_cosine_and_constant():
    s = Schedule("cosine", 0.1, 10, 10)
    assert s(0) == pytest.approx(0.1)
    assert s(50) == pytest.approx(0.05)
    assert s(100) == pytest.approx(0.0, abs=1e-12)
    assert s(25) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert all(Schedule("constant", 0.3, 5, 7)(i) == 0.3 for i in range(35))


def test_unknown_schedule():
    with pytest.raises(UserError, match="unknown schedule 'linear'.*step"):
        Schedule("linear", 0.1, 10, 10)
