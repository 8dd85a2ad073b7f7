"""Metrics the study's stages used to compute themselves, now in the library: the first-layer
numbers (probes.neurons.first_layer_stats) and the bias of the contrast sweep
(probes.bias.model_bias with the sweep's batch of 500)."""

from __future__ import annotations

import math

import torch

from robustlens.data.base import ImageSet
from robustlens.models import create
from robustlens.probes.bias import cue_conflict_bias, model_bias
from robustlens.probes.neurons import first_layer_stats


def _conflict(n: int = 40, k: int = 4) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    shape = torch.randint(0, k, (n,), generator=g)
    texture = (shape + 1 + torch.randint(0, k - 1, (n,), generator=g)) % k
    colour = torch.randint(0, k, (n,), generator=g)
    return ImageSet(images=images, labels=shape, classes=[str(i) for i in range(k)],
                    factors=torch.stack([shape, texture, colour], 1), factor_names=("shape", "texture", "colour"))


def _model(k: int = 4):
    torch.manual_seed(0)
    return create("small_cnn", num_classes=k, width=4).eval()


def test_first_layer_stats_is_mean_abs_weight_and_shape():
    m = _model()
    w = m.first_conv.weight.detach()
    s = first_layer_stats(m)
    assert s == {"first_layer_norm": float(w.abs().mean()), "filters": w.shape[0], "kernel": list(w.shape[2:])}


def test_sweep_batch_gives_the_same_bias_as_the_default_batch(one_thread):
    data, m = _conflict(), _model()
    a, b = model_bias(m, data, batch_size=500), model_bias(m, data)
    assert a == b or all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_shape_bias_matches_the_stage_definition():
    # the stage's former copy: shape hits / (shape hits + texture hits) over images whose texture differs
    pred = torch.tensor([0, 1, 2, 0, 3])
    shape = torch.tensor([0, 0, 2, 1, 3])
    texture = torch.tensor([1, 1, 0, 0, 3])  # the last image's cues agree: left out
    r = cue_conflict_bias(pred, shape, texture)
    assert (r["shape_hits"], r["texture_hits"], r["n_shape_texture"]) == (2, 2, 4)
    assert r["shape_bias"] == 0.5


def test_an_empty_ratio_is_nan_and_none_in_json(tmp_path):
    from robustlens.io import read_json, write_json_atomic

    r = cue_conflict_bias(torch.tensor([2, 2]), torch.tensor([0, 1]), torch.tensor([1, 0]))
    assert math.isnan(r["shape_bias"])
    write_json_atomic(tmp_path / "r.json", r)
    assert read_json(tmp_path / "r.json")["shape_bias"] is None  # what the study's former copy wrote
