"""Bias formula, eta-squared, smoothness, probe evaluation, AdaIN on hand-made inputs."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from helpers_probes import MeanColour, tiny_set
from robustlens.errors import UserError
from robustlens.probes import adain as A
from robustlens.probes import bias as B
from robustlens.probes import neurons as N
from robustlens.probes.evaluate import evaluate_probes, plot_curves, write_table
from robustlens.probes.transforms import get_probe


# ---------------------------------------------------------------------------- bias
def test_bias_known_values_with_agreeing_cues_left_out():
    shape = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    texture = torch.tensor([1, 2, 3, 4, 5, 6, 6, 7])  # the last two agree with shape: left out
    pred = torch.tensor([0, 1, 3, 4, 5, 9, 6, 7])  # shape hits 2, texture hits 3, one neither
    r = B.cue_conflict_bias(pred, shape, texture)
    assert r["shape_hits"] == 2 and r["texture_hits"] == 3 and r["n_shape_texture"] == 6
    assert r["shape_bias"] == pytest.approx(2 / 5) and r["texture_bias"] == pytest.approx(3 / 5)
    assert r["shape_hit_rate"] == pytest.approx(2 / 6)


def test_colour_bias_and_empty_denominator():
    shape = torch.tensor([0, 1, 2, 3])
    texture = torch.tensor([1, 2, 3, 0])
    colour = torch.tensor([2, 1, 0, 1])  # image 1: colour agrees with shape, left out
    pred = torch.tensor([2, 1, 0, 3])  # colour hits on 0 and 2; shape hit on 3 (1 left out)
    r = B.cue_conflict_bias(pred, shape, texture, colour)
    assert r["colour_hits"] == 2 and r["n_shape_colour"] == 3
    assert r["colour_bias"] == pytest.approx(2 / 3)
    none = B.cue_conflict_bias(torch.tensor([5, 5]), torch.tensor([0, 1]), torch.tensor([1, 0]))
    assert math.isnan(none["shape_bias"])


def test_model_bias_needs_factors():
    d = tiny_set()
    r = B.model_bias(MeanColour(), d)
    assert 0 <= r["shape_hits"] + r["texture_hits"] <= len(d)
    with pytest.raises(UserError, match="factors"):
        B.model_bias(MeanColour(), d.__class__(images=d.images, labels=d.labels, classes=d.classes))


def test_contrast_sweep_with_fake_training(tmp_path):
    d = tiny_set()
    seen = []

    def train_fn(mode, train_set, eps):
        seen.append((mode, eps))
        return MeanColour()

    rows = B.contrast_sweep(train_fn, [0.05, 0.2], eps=0.03, loader=lambda src, split: d)
    assert [(r["contrast"], r["mode"]) for r in rows] == [(0.05, "std"), (0.05, "adv"), (0.2, "std"), (0.2, "adv")]
    assert seen[0] == ("std", 0.03)
    assert B.plot_sweep(rows, tmp_path / "sweep.png").stat().st_size > 1000
    with pytest.raises(UserError, match="contrast"):
        B.contrast_sweep(train_fn, [1.5], loader=lambda src, split: d)


# ---------------------------------------------------------------------------- neurons
def test_eta_squared_known_values():
    acts = torch.tensor([[1.0, 1.0, 5.0], [1.0, 2.0, 5.0], [3.0, 3.0, 5.0], [3.0, 4.0, 5.0]])
    groups = torch.tensor([0, 0, 1, 1])
    eta = N.eta_squared(acts, groups)
    # column 0 fully explained; column 1: between = 4*1 = 4, total = 5 -> 0.8; column 2 constant -> nan
    assert eta[0].item() == pytest.approx(1.0)
    assert eta[1].item() == pytest.approx(0.8)
    assert math.isnan(eta[2].item())


def test_eta_squared_matches_scipy_anova():
    from scipy.stats import f_oneway

    g = torch.Generator().manual_seed(1)
    a = torch.randn(60, 1, generator=g, dtype=torch.float64)
    grp = torch.arange(60) % 4
    eta = N.eta_squared(a, grp).item()
    f = f_oneway(*[a[grp == k, 0].numpy() for k in range(4)]).statistic
    k, n = 4, 60  # F = (eta/(k-1)) / ((1-eta)/(n-k))
    assert f == pytest.approx((eta / (k - 1)) / ((1 - eta) / (n - k)), rel=1e-9)


def test_concept_selectivity_counts_and_best_factor():
    shape = torch.arange(40) % 4
    texture = (torch.arange(40) // 4) % 5
    colour = torch.arange(40) % 2
    acts = torch.stack([(shape == 2).double(), texture.double() * 0 + (texture == 1) + (texture == 3)], 1)
    sel = N.concept_selectivity(acts, torch.stack([shape, texture, colour], 1), ("shape", "texture", "colour"))
    assert sel["best_factor"] == ["shape", "texture"]
    assert sel["n_concepts"] == [1, 2]
    assert sel["concepts"][0] == ["shape=2"]


def test_smoothness_measures():
    const = torch.ones(1, 3, 5, 5)
    checker = ((torch.arange(5).view(-1, 1) + torch.arange(5).view(1, -1)) % 2).float().mul(2).sub(1).expand(1, 3, 5, 5)
    assert N.total_variation(const).item() == 0
    assert N.total_variation(checker).item() == pytest.approx(2 * 2 * 5 * 4 / 25)  # |diff| 2 at 40 pairs / L1 25
    assert N.total_variation(3 * checker).item() == pytest.approx(N.total_variation(checker).item())
    assert N.high_frequency_share(checker, pad_to=5).item() > 0.9
    smooth = torch.exp(-((torch.arange(9.0) - 4) ** 2) / 8).view(1, 1, 9, 1) * torch.exp(-((torch.arange(9.0) - 4) ** 2) / 8)
    assert N.high_frequency_share(smooth.view(1, 1, 9, 9)).item() < 0.05


def test_layers_and_analyse_model(tmp_path):
    m = MeanColour()
    with pytest.raises(UserError, match="valid layers: conv, relu, fc"):
        N.get_layer(m, "body.9")
    res = {"a": N.analyse_model(m, tiny_set()), "b": N.analyse_model(m, tiny_set(seed=1), layers=["conv"])}
    assert res["a"]["layers"]["relu"]["summary"]["channels"] == 4
    rows = N.compare_summary(res)
    assert {r["model"] for r in rows} == {"a", "b"}
    assert N.plot_neurons(res, tmp_path / "n.png").stat().st_size > 1000


# ---------------------------------------------------------------------------- evaluation
def test_evaluate_probes_table_and_plot(tmp_path):
    d = tiny_set(n=10)
    models = {"one": MeanColour(), "two": MeanColour()}
    probes = [get_probe("blur").with_params(levels=[0.0, 1.0]), get_probe("median").with_params(levels=[0, 2]),
              "invert", "silhouette", "edges", "stylize"]
    rows = evaluate_probes(models, d, probes, batch_size=4)
    assert len(rows) == 2 * (1 + 2 + 2 + 4)
    by = {(r["model"], r["probe"], r["level"]): r for r in rows}
    # identity levels reproduce clean accuracy; identical models give identical rows
    for m in models:
        assert by[(m, "blur", 0.0)]["top1"] == by[(m, "clean", None)]["top1"]
        assert by[(m, "median", 0)]["top1"] == by[(m, "clean", None)]["top1"]
    assert all(by[("one",) + k[1:]]["top1"] == r["top1"] for k, r in by.items() if k[0] == "two")
    assert all(r["top5"] == 1.0 for r in rows)  # 3 classes: top-5 is trivially 1
    # against a direct computation
    with torch.no_grad():
        direct = (models["one"](d.float()).argmax(1) == d.labels).float().mean().item()
    assert by[("one", "clean", None)]["top1"] == pytest.approx(direct)
    j, c = write_table(rows, tmp_path / "t")
    assert len(list(csv.DictReader(open(c)))) == len(rows)
    assert plot_curves(rows, tmp_path / "c.png").stat().st_size > 1000
    with pytest.raises(UserError, match="valid probes"):
        evaluate_probes(models, d, ["nope"])


# ---------------------------------------------------------------------------- AdaIN
def test_adain_statistics_and_weight_files(tmp_path):
    g = torch.Generator().manual_seed(0)
    c, s = torch.randn(2, 4, 6, 6, generator=g), torch.randn(2, 4, 6, 6, generator=g) * 3 + 1
    t = A.adain(c, s, eps=0)
    assert torch.allclose(t.mean((2, 3)), s.mean((2, 3)), atol=1e-5)
    assert torch.allclose(t.std((2, 3)), s.std((2, 3)), atol=1e-4)
    with pytest.raises(UserError, match="--adain-encoder.*not found"):
        A.AdaIN.from_files(tmp_path / "vgg_normalised.pth", tmp_path / "decoder.pth")
    with pytest.raises(UserError, match="--adain-encoder"):
        A.AdaIN.from_files(None, None)
    # the released file holds all 53 VGG modules; the loader needs those up to relu4_1 (kept
    # small here: the encoder's keys are the first 31 modules' keys of the full VGG)
    assert set(A.encoder().state_dict()) <= set(A.vgg_normalised().state_dict())
    torch.manual_seed(0)
    torch.save(A.encoder().state_dict(), tmp_path / "vgg.pth")
    from safetensors.torch import save_file

    save_file(A.decoder().state_dict(), str(tmp_path / "dec.safetensors"))
    net = A.AdaIN.from_files(tmp_path / "vgg.pth", tmp_path / "dec.safetensors")
    x = torch.rand(2, 3, 16, 16)
    y = net.stylize(x, x.flip(0))
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    torch.save({"0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="lacks"):
        A.AdaIN.from_files(tmp_path / "bad.pth", tmp_path / "dec.safetensors")


def test_iterative_median_grid_equals_levels_computed_from_scratch():
    """Repeated filters are computed level after level (r from r-1); the accuracies equal
    those of applying each level to the clean images, also for a grid that is not increasing."""
    import dataclasses

    from robustlens.probes import transforms as T

    d = tiny_set(n=12)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3))
    models = {"net": net.eval()}
    calls = []
    real = T.median_filter

    def counting(x, k=3, repeats=1, mode="nearest", **kw):
        calls.append(int(repeats))
        return real(x, k, repeats, mode, **kw)

    grid = [0, 1, 3, 4, 2]
    probe = get_probe("median").with_params(levels=grid)
    assert probe.iterative
    T.median_filter = counting
    try:
        fast = evaluate_probes(models, d, [probe], batch_size=5)
        n_fast = sum(calls)
        calls.clear()
        slow = evaluate_probes(models, d, [dataclasses.replace(probe, iterative=False)], batch_size=5)
        n_slow = sum(calls)
    finally:
        T.median_filter = real
    assert [(r["level"], r["top1"], r["top5"]) for r in fast] == [(r["level"], r["top1"], r["top5"]) for r in slow]
    batches = 3
    assert n_slow == batches * sum(grid) and n_fast == batches * (4 + 2)  # 0,1,3,4 chained; 2 from scratch
    x = d.float()
    assert torch.equal(real(real(x, 3, 2), 3, 3), real(x, 3, 5))
