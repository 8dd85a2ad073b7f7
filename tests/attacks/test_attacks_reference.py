"""Against an independent implementation (ART) and known results, on a small adversarially
trained model (tests/attacks/helpers_attacks.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_attacks import EVAL_EPS, adv_model, eval_data

from robustlens.attacks import apgd_ce, pgd
from robustlens.threat import make_threat


def _acc(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("steps", [10])
def test_pgd_agrees_with_art(steps):
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    model = adv_model()
    x, y = eval_data()
    eps = EVAL_EPS
    step = 2.5 * eps / steps
    clf = PyTorchClassifier(
        model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10, clip_values=(0.0, 1.0)
    )
    # deterministic setting (no random start) so that both compute the same iterates
    art_pgd = ProjectedGradientDescent(
        clf, norm=np.inf, eps=eps, eps_step=step, max_iter=steps, num_random_init=0, batch_size=256, verbose=False
    )
    x_art = torch.from_numpy(art_pgd.generate(x.numpy(), y=y.numpy()))
    for p in model.parameters():  # ART's backward() fills .grad; ours never does
        p.grad = None
    x_ours = pgd(model, x, y, make_threat("linf", eps), steps=steps, step_size=step, random_start=False)
    acc_art, acc_ours = _acc(model, x_art, y), _acc(model, x_ours, y)
    assert abs(acc_art - acc_ours) <= 0.01, (acc_art, acc_ours)
    assert 0.05 < acc_ours < 0.95  # a non-trivial operating point
    same = (x_art - x_ours).abs().flatten(1).amax(1) <= 1e-5
    assert float(same.float().mean()) >= 0.97, float(same.float().mean())
    assert all(p.grad is None for p in model.parameters())


def test_apgd_ce_100_at_least_as_strong_as_pgd_20():
    model = adv_model()
    x, y = eval_data()
    x, y = x[:120], y[:120]
    threat = make_threat("linf", EVAL_EPS)
    acc_pgd = _acc(model, pgd(model, x, y, threat, steps=20, generator=torch.Generator().manual_seed(0)), y)
    acc_apgd = _acc(model, apgd_ce(model, x, y, threat, generator=torch.Generator().manual_seed(0)), y)  # default 100 it.
    assert _acc(model, x, y) > acc_pgd > 0.05
    assert acc_apgd <= acc_pgd, (acc_apgd, acc_pgd)
