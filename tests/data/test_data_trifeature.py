"""The procedural trifeature set: determinism, factors, masks/boxes, options, conflict split."""

from __future__ import annotations


import pytest
import torch

from robustlens.data import load, load_splits
from robustlens.data.trifeature import (
    COLOUR_RGB,
    SHAPES,
    TEXTURES,
    TrifeatureConfig,
    boxes_from_masks,
    generate,
)
from robustlens.errors import UserError


def small(split: str = "train", **kw):
    kw.setdefault("n_train", 200)
    kw.setdefault("n_test", 100)
    kw.setdefault("n_conflict", 100)
    return generate(TrifeatureConfig(**kw), split)


def test_deterministic_and_seed_dependent():
    a, b = small(seed=3), small(seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.factors, b.factors)
    assert torch.equal(a.masks, b.masks) and torch.equal(a.boxes, b.boxes)
    c = small(seed=4)
    assert not torch.equal(a.images, c.images)
    # splits are different streams
    assert not torch.equal(small("test", n_test=200).images, a.images)


def test_shapes_dtypes_and_factor_ranges():
    s = small()
    assert s.images.shape == (200, 3, 32, 32) and s.images.dtype == torch.uint8
    assert s.factors.shape == (200, 3) and s.factors.dtype == torch.int64
    assert s.factor_names == ("shape", "texture", "colour")
    assert int(s.factors.min()) >= 0 and int(s.factors.max()) <= 9
    assert s.classes == list(SHAPES) and torch.equal(s.labels, s.factor("shape"))
    assert s.class_counts() == [20] * 10  # balanced
    # defaults: texture == shape in training (texture_corr=1), colour random
    assert torch.equal(s.factor("texture"), s.factor("shape"))
    assert len(set(s.factor("colour").tolist())) > 5
    assert s.meta["options"]["contrast"] == pytest.approx(0.07)


def test_box_is_mask_bounding_box_and_background_plain():
    s = small(n_train=100, background=0.2)
    for i in range(len(s)):
        m = s.masks[i]
        assert m.any()
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert s.boxes[i].tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    bg = round(0.2 * 255)
    outside = ~s.masks.unsqueeze(1).expand_as(s.images)
    assert (s.images[outside] == bg).all()
    # boxes_from_masks on a hand-made mask
    m = torch.zeros(2, 5, 6, dtype=torch.bool)
    m[0, 1:3, 2:5] = True
    assert boxes_from_masks(m).tolist() == [[2.0, 1.0, 5.0, 3.0], [0.0, 0.0, 0.0, 0.0]]


def test_foreground_is_colour_plus_texture_of_given_amplitude():
    for contrast in (0.0, 0.07, 0.15, 0.2):
        s = small(n_train=100, contrast=contrast)
        x = s.images.float() / 255
        colour = COLOUR_RGB[s.factor("colour")].view(-1, 3, 1, 1).expand_as(x)
        inside = s.masks.unsqueeze(1).expand_as(x)
        dev = (x - colour)[inside].abs()
        assert dev.max().item() <= contrast + 0.5 / 255 + 1e-6
        if contrast > 0:
            assert dev.max().item() >= 0.9 * contrast  # the texture reaches its amplitude
        else:
            assert dev.max().item() <= 0.5 / 255 + 1e-6


def test_contrast_changes_texture_amplitude():
    lo, hi = small(contrast=0.03), small(contrast=0.18)
    assert torch.equal(lo.masks, hi.masks)  # same geometry, only the amplitude changes

    def spread(s):  # mean within-silhouette standard deviation of the red channel
        x = s.images[:, 0].float()
        m = s.masks.float()
        mean = (x * m).sum((1, 2)) / m.sum((1, 2))
        var = (((x - mean.view(-1, 1, 1)) ** 2) * m).sum((1, 2)) / m.sum((1, 2))
        return var.sqrt().mean()

    assert spread(hi) > 2 * spread(lo)


def test_conflict_split_disagrees_by_construction():
    c = small("conflict", n_conflict=300)
    assert (c.factor("shape") != c.factor("texture")).all()
    assert torch.equal(c.labels, c.factor("shape"))
    assert c.name == "trifeature/conflict"
    t = small("conflict", n_conflict=100, label="texture")
    assert (t.factor("shape") != t.factor("texture")).all()
    assert torch.equal(t.labels, t.factor("texture")) and t.classes == list(TEXTURES)


def test_correlation_options():
    s = small(n_train=2000, texture_corr=0.0, colour_corr=1.0)
    agree = (s.factor("texture") == s.labels).float().mean().item()
    assert abs(agree - 0.1) < 0.04  # independent: 1/10 by chance
    assert torch.equal(s.factor("colour"), s.labels)
    h = small(n_train=2000, texture_corr=0.5)
    assert abs((h.factor("texture") == h.labels).float().mean().item() - 0.55) < 0.05


@pytest.mark.parametrize("size", [32, 64, 96, 224])
def test_all_sizes(size):
    s = generate(TrifeatureConfig(size=size, n_test=20), "test")
    assert s.images.shape == (20, 3, size, size) and s.masks.shape == (20, size, size)
    frac = s.masks.float().mean((1, 2))
    assert (frac > 0.03).all() and (frac < 0.6).all()


def test_every_shape_and_texture_distinct():
    """Each shape class has its own silhouette: at a fixed pose the masks differ pairwise."""
    from robustlens.data.trifeature import render

    n = len(SHAPES)
    f = torch.stack([torch.arange(n), torch.arange(n), torch.zeros(n, dtype=torch.long)], 1)
    imgs, masks = render(
        f, torch.full((n, 2), 32.0), torch.full((n,), 26.0), torch.zeros(n), torch.zeros(n, 2), 64, 0.15, 8.0
    )
    flat = masks.flatten(1).float()
    iou = (flat @ flat.T) / (flat.sum(1, keepdim=True) + flat.sum(1) - flat @ flat.T)
    off = iou[~torch.eye(n, dtype=torch.bool)]
    assert off.max() < 0.9
    # textures differ pairwise on a full-square patch
    sq = torch.stack([torch.full((n,), 2), torch.arange(n), torch.full((n,), 9)], 1)
    imgs, _ = render(sq, torch.full((n, 2), 32.0), torch.full((n,), 30.0), torch.zeros(n), torch.zeros(n, 2), 64, 0.15, 8.0)
    patch = imgs[:, 0, 24:40, 24:40].flatten(1).float()
    d = torch.cdist(patch, patch)
    assert d[~torch.eye(n, dtype=torch.bool)].min() > 1.0


def test_source_string_equals_keywords_and_errors():
    a = load("trifeature:size=48,contrast=0.18,n_test=30,seed=2", split="test")
    b = load("trifeature", split="test", size=48, contrast=0.18, n_test=30, seed=2)
    assert torch.equal(a.images, b.images) and a.resolution == (48, 48)
    with pytest.raises(UserError, match="valid options"):
        load("trifeature:bogus=1", split="test")
    with pytest.raises(UserError, match="contrast"):
        load("trifeature:contrast=abc,n_test=5", split="test")
    with pytest.raises(UserError, match="size"):
        load("trifeature", split="test", size=-3)
    with pytest.raises(UserError, match="size"):
        load("trifeature", split="test", size="big")
    with pytest.raises(UserError, match="split"):
        load("trifeature:n_test=5", split="nope")
    with pytest.raises(UserError, match="label"):
        load("trifeature:label=size,n_test=5", split="test")
    with pytest.raises(UserError, match="size given twice"):
        load("trifeature:size=64,n_test=5", split="test", size=32)
    with pytest.raises(UserError, match="valid options"):
        load("trifeature:n_test=5", split="test", colour="red")
    with pytest.raises(UserError, match="does not apply"):
        load("trifeature:n_test=5", split="test", format="folder")
    splits = load_splits("trifeature:n_train=20,n_test=10,n_conflict=10")
    assert {k: len(v) for k, v in splits.items()} == {"train": 20, "test": 10, "conflict": 10}


def test_output_does_not_depend_on_chunking_or_threads(monkeypatch):
    import robustlens.data.trifeature as tf

    ref = small(n_train=300, texture_corr=0.3)
    monkeypatch.setattr(tf, "_CHUNK", 7)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        other = small(n_train=300, texture_corr=0.3)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(ref.images, other.images) and torch.equal(ref.boxes, other.boxes)


# ------------------------------------------------------------ the study's world (issue 15)
# the default study's world (robustlens/study/default.toml)
STUDY_WORLD = dict(label="texture", shape_corr=0.85, contrast=0.06, scale_min=0.4, scale_max=0.5)


def test_study_world_is_deterministic():
    a, b = small(**STUDY_WORLD, seed=5), small(**STUDY_WORLD, seed=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.factors, b.factors)
    c = small("conflict", **STUDY_WORLD, seed=5)
    assert torch.equal(c.images, small("conflict", **STUDY_WORLD, seed=5).images)


@pytest.mark.parametrize("corr", [0.0, 0.7, 0.85, 1.0])
def test_agreement_rates_within_one_percent(corr):
    """The shape agrees with the class (the texture) corr + (1 - corr) / 10 of the time."""
    from robustlens.data.trifeature import agreement

    s = generate(TrifeatureConfig(**{**STUDY_WORLD, "shape_corr": corr}, n_train=20000), "train")
    rate = (s.factor("shape") == s.labels).float().mean().item()
    assert abs(rate - agreement(corr)) < 0.01
    assert torch.equal(s.labels, s.factor("texture")) and s.classes == list(TEXTURES)
    colour = (s.factor("colour") == s.labels).float().mean().item()
    assert abs(colour - 0.1) < 0.01  # colour_corr = 0: chance


def test_cue_conflict_pairs_always_in_conflict():
    for label in ("texture", "shape", "colour"):
        c = generate(TrifeatureConfig(label=label, n_conflict=3000, contrast=0.05), "conflict")
        assert (c.factor("shape") != c.factor("texture")).all()
        assert torch.equal(c.labels, c.factor(label))
        # the texture class's offset from the shape class is uniform over the 9 others
        off = torch.bincount((c.factor("texture") - c.factor("shape")) % 10, minlength=10)
        assert off[0] == 0 and off[1:].min() > 0.8 * 3000 / 9


def test_describe_names_the_cues():
    text = TrifeatureConfig(**STUDY_WORLD).describe(eps=8 / 255)
    assert text.startswith("the class is the texture (amplitude 0.060 = 1.9 eps)")
    assert "the shape agrees with it 86.5% of the time" in text
    assert "the colour agrees with it 10% of the time (chance)" in text


@pytest.mark.parametrize(
    "options, key",
    [
        ({"shape_corr": 1.2, "label": "texture"}, "shape_corr"),
        ({"texture_corr": -0.1}, "texture_corr"),
        ({"contrast": 0.25}, "contrast"),  # would clip the colours
        ({"label": "texture", "texture_corr": 0.5}, "texture_corr"),  # the class's own agreement
        ({"label": "colour", "colour_corr": 1.0}, "colour_corr"),
        ({"background": 1.5}, "background"),
    ],
)
def test_contradictory_options_one_line_error(options, key):
    with pytest.raises(UserError, match=f"trifeature option {key}=") as e:
        TrifeatureConfig.from_options(options)
    assert "\n" not in str(e.value)


def test_max_contrast_never_clips():
    """At MAX_CONTRAST the texture still reaches its full amplitude on both sides of every
    colour: the darkest channel goes down by the amplitude, the brightest up by it."""
    from robustlens.data.trifeature import MAX_CONTRAST

    s = small(n_train=400, contrast=MAX_CONTRAST)
    x = s.images.float() / 255
    colour = COLOUR_RGB[s.factor("colour")].view(-1, 3, 1, 1).expand_as(x)
    inside = s.masks.unsqueeze(1).expand_as(x)
    dev = (x - colour)[inside]
    assert dev.min().item() <= -0.95 * MAX_CONTRAST and dev.max().item() >= 0.95 * MAX_CONTRAST
    assert dev.abs().max().item() <= MAX_CONTRAST + 0.5 / 255 + 1e-6
