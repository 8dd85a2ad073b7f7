"""Learning-rate schedules as pure functions of the global step.

A schedule is just ``lr_at(step)``; its whole state is the step counter, so resuming a run
needs nothing more than the step it stopped at. The loop sets the learning rate of every
parameter group before each optimiser step (as fast_adversarial's ``train_fgsm.py`` does).

* ``step``: ``lr * gamma ** (number of milestones <= epoch)``; the main paper (Itazuri et
  al.) and Madry's ``robustness``: x0.1 at epochs 30 and 60 of 90.
* ``cyclic`` (one-cycle): ``np.interp(t, [0, peak * E, E], [0, lr, 0])`` with
  ``t = epoch + (i + 1) / steps_per_epoch`` evaluated per step (Wong et al. 2020, fast AT,
  Sec. 5.1; fast_adversarial uses peak = 2/5).
* ``cosine``: ``lr * (1 + cos(pi * step / total)) / 2`` (Loshchilov & Hutter 2017, no restarts).
* ``constant``: ``lr``.
"""

from __future__ import annotations

import bisect
import math
from typing import Sequence

from robustlens.train.config import normalize_schedule


class Schedule:
    """``Schedule(...)(step)`` -> learning rate used for optimiser step ``step`` (0-based)."""

    def __init__(
        self,
        name: str,
        lr: float,
        epochs: int,
        steps_per_epoch: int,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        peak_at: float = 0.4,
    ) -> None:
        self.name = normalize_schedule(name)
        self.lr = float(lr)
        self.epochs = int(epochs)
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.peak_at = float(peak_at)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def __call__(self, step: int) -> float:
        if self.name == "constant":
            return self.lr
        if self.name == "step":
            epoch = step // self.steps_per_epoch
            return self.lr * self.gamma ** bisect.bisect_right(self.milestones, epoch)
        if self.name == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))
        # cyclic: piecewise linear 0 -> lr -> 0 over epochs, evaluated after the step.
        t = (step + 1) / self.steps_per_epoch
        peak = self.peak_at * self.epochs
        if t <= peak:
            return self.lr * t / peak
        return max(0.0, self.lr * (self.epochs - t) / (self.epochs - peak))

    def __repr__(self) -> str:
        return f"Schedule({self.name}, lr={self.lr:g}, epochs={self.epochs}, steps_per_epoch={self.steps_per_epoch})"
