"""Threat models: parsing, projection, random starts, ascent directions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustlens.errors import UserError
from robustlens.threat import L1, L2, Linf, make_threat, parse_eps


def test_parse_eps_fractions_and_numbers():
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps("0.5") == 0.5
    assert parse_eps(0.25) == 0.25
    assert parse_eps(torch.tensor(0.125)) == 0.125
    assert parse_eps(np.float32(0.5)) == 0.5


@pytest.mark.parametrize("bad", ["-1/255", "abc", "1/0", "nan", "inf", -0.1, True])
def test_parse_eps_rejects(bad):
    with pytest.raises(UserError, match="eps"):
        parse_eps(bad)


def test_make_threat_errors_name_the_problem():
    with pytest.raises(UserError, match="linf, l2, l1"):
        make_threat("l3", 0.1)
    with pytest.raises(UserError, match="above 1"):
        make_threat("linf", 1.5)
    with pytest.raises(UserError, match=">= 0"):
        make_threat("l2", -0.5)
    assert isinstance(make_threat("Linf", "8/255"), Linf)
    assert isinstance(make_threat("L-2", 1), L2)
    assert make_threat("inf", 0.1).to_dict() == {"norm": "linf", "eps": 0.1}


def _brute_l1_projection(v: np.ndarray, eps: float) -> np.ndarray:
    """Bisection on the soft-threshold theta: sum(max(|v| - theta, 0)) = eps."""
    if np.abs(v).sum() <= eps:
        return v
    lo, hi = 0.0, float(np.abs(v).max())
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.clip(np.abs(v) - mid, 0, None).sum() > eps:
            lo = mid
        else:
            hi = mid
    return np.sign(v) * np.clip(np.abs(v) - hi, 0, None)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.01, 3.0), scale=st.floats(0.01, 2.0))
def test_l1_projection_matches_bisection(seed, eps, scale):
    g = torch.Generator().manual_seed(seed)
    delta = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64) * scale
    got = L1(eps)._project_delta(delta)
    for i in range(3):
        want = _brute_l1_projection(delta[i].numpy().ravel(), eps)
        np.testing.assert_allclose(got[i].numpy().ravel(), want, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(norm=st.sampled_from(["linf", "l2", "l1"]), seed=st.integers(0, 10_000), eps=st.floats(0.0, 1.0), scale=st.floats(0.0, 3.0))
def test_project_and_random_init_stay_in_ball_and_box(norm, seed, eps, scale):
    t = make_threat(norm, eps if norm == "linf" else eps * 5)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 3, 6, 6, generator=g)
    far = x + scale * torch.randn(x.shape, generator=g)
    p = t.project(far, x)
    assert bool(t.contains(p, x).all())
    r = t.random_init(x, g)
    assert bool(t.contains(r, x).all())
    # projecting a point already inside changes nothing
    assert torch.allclose(t.project(p, x), p, atol=1e-6)


def test_l2_projection_is_radial_scaling():
    t = L2(0.5)
    x = torch.full((2, 1, 3, 3), 0.1)
    delta = torch.zeros_like(x)
    delta[0, 0, 0, 0], delta[0, 0, 1, 1] = 0.3, 0.4  # norm 0.5: inside
    delta[1, 0, 0, 0], delta[1, 0, 1, 1] = 0.6, 0.8  # norm 1.0: scaled by 1/2
    p = t.project(x + delta, x) - x
    assert torch.allclose(p[0], delta[0])
    assert torch.allclose(p[1], delta[1] / 2, atol=1e-6)


def test_l2_random_init_is_uniform_in_radius():
    # uniform in a d-ball: P(||delta|| <= eps * 0.5^(1/d)) = 0.5
    t = L2(0.1)
    x = torch.full((4000, 1, 2, 2), 0.5)
    r = t.lengths(t.random_init(x, torch.Generator().manual_seed(0)) - x)
    frac = float((r <= 0.1 * 0.5 ** (1 / 4)).float().mean())
    assert abs(frac - 0.5) < 0.04
    assert float(r.max()) <= 0.1 + 1e-6


def test_directions_have_unit_length():
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(5, 3, 8, 8, generator=g)
    assert torch.equal(Linf(0.1).direction(grad), grad.sign())
    assert torch.allclose(L2(1.0).direction(grad).flatten(1).norm(dim=1), torch.ones(5))
    d1 = L1(1.0, sparsity=0.9).direction(grad)
    assert torch.allclose(d1.flatten(1).abs().sum(1), torch.ones(5))
    k = round(0.1 * 3 * 64)
    assert int((d1[0] != 0).sum()) == k
    # the ascent step raises a linear function by exactly step * dual norm
    step = 0.01
    for t, dual in ((Linf(0.1), grad.flatten(1).abs().sum(1)), (L2(1.0), grad.flatten(1).norm(dim=1))):
        x = torch.zeros_like(grad)
        gain = (t.ascent_step(x, grad, step) * grad).flatten(1).sum(1)
        assert torch.allclose(gain, step * dual, rtol=1e-5)


def test_per_example_step_sizes():
    x = torch.zeros(3, 1, 2, 2)
    out = Linf(1.0).ascent_step(x, torch.ones_like(x), torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(out[:, 0, 0, 0], torch.tensor([0.1, 0.2, 0.3]))


def test_contains_rejects_outside_points():
    t = Linf(0.1)
    x = torch.full((2, 1, 2, 2), 0.5)
    a = x.clone()
    a[1, 0, 0, 0] = 0.7
    assert t.contains(a, x).tolist() == [True, False]
    b = torch.zeros_like(x)
    b[0] = 1.2
    assert not bool(t.contains(b, b.clamp(0, 1)).all())
    assert math.isclose(t.eps, 0.1)
