"""Late fusion (Itazuri et al. 2019, Sec. 4.2): model contract, frozen/fine-tuned backbones,
precomputed-feature probe == end-to-end probe, variant parsing, bad input, outputs."""

from __future__ import annotations

import json

import pytest
import torch

from helpers_transfer import tiny_model, tiny_set
from robustlens.errors import UserError
from robustlens.transfer.fusion import (
    LateFusion,
    Target,
    check_variants,
    compute_features,
    fit_linear_head,
    new_head,
    parse_variants,
    run_fusion_study,
    variant_members,
)


def test_forward_penultimate_shapes_and_head():
    a, b = tiny_model(0), tiny_model(1)
    m = LateFusion(a, b, num_classes=7).eval()
    x = torch.rand(5, 3, 16, 16)
    assert m.penultimate(x).shape == (5, a.num_features + b.num_features)
    assert m(x).shape == (5, 7)
    assert m.head.in_features == 64 and m.head.out_features == 7 and m.num_classes == 7
    # the features are exactly the two backbones' own penultimate features (each normalises itself)
    with torch.no_grad():
        assert torch.allclose(m.penultimate(x), torch.cat([a.penultimate(x), b.penultimate(x)], 1))
    single = LateFusion(tiny_model(2), None, num_classes=3).eval()
    assert single(x).shape == (5, 3) and single.num_features == 32
    with pytest.raises(UserError):
        LateFusion(a, a, 3)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_linear_mode_keeps_backbones_and_finetune_changes_them():
    data = tiny_set(32, 16)
    x, y = data.float(), data.labels
    a, b = tiny_model(0), tiny_model(1)
    m = LateFusion(a, b, 10).freeze_backbones()
    before = _state(m.backbones)
    m.train()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = m.backbones.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    # fine-tuning: the same loop with every weight free moves the backbones
    m2 = LateFusion(tiny_model(0), tiny_model(1), 10)
    before2 = _state(m2.backbones)
    m2.train()
    opt = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(m2(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after2 = m2.backbones.state_dict()
    assert any(not torch.equal(before2[k], after2[k]) for k in before2 if after2[k].is_floating_point())


@pytest.mark.parametrize("standardize", [False, True])
def test_precomputed_probe_equals_end_to_end(standardize):
    data = tiny_set(48, 16)
    a, b = tiny_model(0), tiny_model(1)
    fused = LateFusion(a, b, 10).freeze_backbones().eval()
    feats = compute_features(fused, data)
    h1 = new_head(fused.num_features, 10, seed=3)
    fit_linear_head(h1, feats, data.labels, epochs=4, lr=0.05, batch_size=16, seed=5, standardize=standardize)
    # end to end: the images go through the frozen backbones batch by batch
    h2 = new_head(fused.num_features, 10, seed=3)
    fit_linear_head(h2, data.float(), data.labels, epochs=4, lr=0.05, batch_size=16, seed=5, standardize=standardize, feature_fn=fused.penultimate)
    assert torch.allclose(h1.weight, h2.weight, atol=1e-5) and torch.allclose(h1.bias, h2.bias, atol=1e-5)
    # the head was trained: it is not the initial one
    h0 = new_head(fused.num_features, 10, seed=3)
    assert not torch.allclose(h0.weight, h1.weight)


def test_standardized_head_is_folded_into_raw_features():
    data = tiny_set(40, 16)
    fused = LateFusion(tiny_model(0), tiny_model(1), 10).freeze_backbones().eval()
    feats = compute_features(fused, data)
    m, s = feats.mean(0), feats.std(0, unbiased=False).clamp_min(1e-6)
    # Train on z-scores by hand (no folding) and compare logits with the folded head on raw features.
    h_ref = new_head(64, 10, 1)
    fit_linear_head(h_ref, (feats - m) / s, data.labels, epochs=3, lr=0.05, batch_size=8, seed=2, standardize=False)
    h = new_head(64, 10, 1)
    fit_linear_head(h, feats, data.labels, epochs=3, lr=0.05, batch_size=8, seed=2, standardize=True)
    with torch.no_grad():
        assert torch.allclose(h(feats), h_ref((feats - m) / s), atol=1e-4)


def test_variant_parsing_and_needs_two():
    assert parse_variants("STD, adv,std+adv,std") == ["std", "adv", "std+adv"]
    assert variant_members("std+std") == [("std", 0), ("std", 1)]
    assert variant_members("adv+std") == [("adv", 0), ("std", 0)]
    for bad in ("", ",", "std+adv+std", "std++adv", "+adv"):
        with pytest.raises(UserError):
            parse_variants(bad)
    check_variants(["std+adv", "adv+adv"], {"std": 1, "adv": 2})
    with pytest.raises(UserError, match="std\\+std.*two different 'std' checkpoints"):
        check_variants(["std+std"], {"std": 1, "adv": 2})
    with pytest.raises(UserError, match="'adv'"):
        check_variants(["adv"], {"std": 2})


def _targets(sizes=(12, 16)):
    return [Target("tiny", tiny_set(40, s, seed=1), tiny_set(20, s, seed=2)) for s in sizes]


def test_study_bad_input():
    bk = {"std": [tiny_model(0)], "adv": [tiny_model(1)]}
    with pytest.raises(UserError, match="needs two"):
        run_fusion_study(bk, _targets(), "std+std", repeats=1, show_progress=False)
    with pytest.raises(UserError, match="no target"):
        run_fusion_study(bk, [], "std", repeats=1, show_progress=False)
    with pytest.raises(UserError, match="classes"):
        run_fusion_study({"std": [tiny_model(0)], "adv": [tiny_model(1, num_classes=5)]}, _targets(), "std+adv", repeats=1, show_progress=False)
    gray = [Target("gray", tiny_set(20, 16, channels=1), tiny_set(10, 16, channels=1))]
    with pytest.raises(UserError, match="channel"):
        run_fusion_study(bk, gray, "std", repeats=1, show_progress=False)
    small = [Target("small", tiny_set(20, 4), tiny_set(10, 4))]
    with pytest.raises(UserError, match="cannot take 4px"):
        run_fusion_study(bk, small, "std", repeats=1, show_progress=False)
    with pytest.raises(UserError, match="--mode"):
        run_fusion_study(bk, _targets(), "std", mode="both", show_progress=False)


def test_study_writes_table_and_plot(tmp_path):
    bk = {"std": [tiny_model(0), tiny_model(2)], "adv": [tiny_model(1), tiny_model(3)]}
    res = run_fusion_study(bk, _targets(), "std,adv,std+std,adv+adv,std+adv", repeats=2, epochs=3, out_dir=tmp_path, show_progress=False)
    assert len(res["runs"]) == 2 * 5 * 2 and len(res["table"]) == 2 * 5
    row = next(r for r in res["table"] if r["variant"] == "std+adv" and r["resolution"] == 16)
    assert row["repeats"] == 2 and 0 <= row["mean"] <= 1 and row["std"] >= 0
    assert [r["resolution"] for r in res["table"]] == sorted(r["resolution"] for r in res["table"])
    for name in ("results.json", "table.csv", "table.md", "fusion.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())["config"]["mode"] == "linear"
    assert (tmp_path / "fusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "STD+ADV" in (tmp_path / "table.md").read_text()
    # same seed -> same numbers
    res2 = run_fusion_study(bk, _targets(), "std,adv,std+std,adv+adv,std+adv", repeats=2, epochs=3, show_progress=False)
    assert [r["mean"] for r in res2["table"]] == [r["mean"] for r in res["table"]]


def test_finetune_study_leaves_given_backbones_untouched():
    a = tiny_model(0)
    before = _state(a)
    res = run_fusion_study({"std": [a]}, _targets((16,)), "std", repeats=1, mode="finetune", epochs=1, lr=0.01, show_progress=False)
    assert res["config"]["mode"] == "finetune" and len(res["runs"]) == 1
    assert all(torch.equal(before[k], v) for k, v in a.state_dict().items())


def test_backbones_with_other_input_sizes_are_refused():
    from robustlens.transfer.fusion import Backbone, check_backbones

    a = Backbone(tiny_model(0), "std", 0, "a", meta={"training": {"resolution": [32, 32]}})
    b = Backbone(tiny_model(1), "adv", 0, "b", meta={"data": "trifeature:size=64 train"})
    c = Backbone(tiny_model(2), "adv", 1, "c", meta={"input_size": 32})
    assert (a.input_size, b.input_size, c.input_size) == (32, 64, 32)
    check_backbones([a, c])
    with pytest.raises(UserError, match="64px"):
        check_backbones([a, b])
    with pytest.raises(UserError, match="no backbone"):
        check_backbones([])
