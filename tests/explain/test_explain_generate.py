"""Large targeted L2 perturbations and the perceptual-alignment score."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from helpers_explain import small_model
from robustlens.errors import UserError
from robustlens.explain.generate import generate, generation_eps, noise_images, perceptual_alignment, random_targets


def test_eps_scaling():
    assert generation_eps((3, 224, 224)) == pytest.approx(40.0)
    assert generation_eps((8, 3, 32, 32)) == pytest.approx(40.0 / 7)


def test_targeted_l2_within_eps_and_raises_target_probability():
    model = small_model(dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    x0 = noise_images(4, (3, 16, 16), g)
    t = torch.tensor([0, 3, 5, 7])
    eps = 2.0
    x = generate(model, x0, t, eps=eps, steps=8)
    assert ((x - x0).flatten(1).norm(dim=1) <= eps * (1 + 1e-5)).all()
    assert x.min() >= 0 and x.max() <= 1
    with torch.no_grad():
        p0 = F.softmax(model(x0), 1).gather(1, t[:, None])
        p1 = F.softmax(model(x), 1).gather(1, t[:, None])
    assert (p1 > p0).all()
    assert all(p.grad is None for p in model.parameters())


def test_perceptual_alignment_report():
    gens = {"STD": small_model(seed=1, dtype=torch.float32), "ADV": small_model(seed=2, dtype=torch.float32)}
    judge = small_model(seed=3, dtype=torch.float32)
    x0 = noise_images(4, (3, 16, 16), torch.Generator().manual_seed(0))
    t = random_targets(torch.tensor([0, 1, 2, 3]), 10, torch.Generator().manual_seed(0))
    assert (t != torch.tensor([0, 1, 2, 3])).all()
    res = perceptual_alignment(gens, judge, x0, t, steps=5)
    assert set(res["models"]) == {"STD", "ADV"}
    for r in res["models"].values():
        assert 0 <= r["judge_target_rate"] <= 1 and 0 <= r["generator_target_rate"] <= 1
        assert r["mean_l2"] <= r["eps"] * (1 + 1e-5) and math.isclose(r["eps"], generation_eps(x0.shape))


def test_bad_input():
    model = small_model(dtype=torch.float32)
    x0 = torch.rand(2, 3, 16, 16)
    with pytest.raises(UserError, match="out of range"):
        generate(model, x0, 10)
    with pytest.raises(UserError, match="steps"):
        generate(model, x0, 1, steps=0)
