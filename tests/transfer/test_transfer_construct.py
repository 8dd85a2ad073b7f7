"""Robust / non-robust data sets (Ilyas et al. 2019): inversion reduces the representation
distance, targeted perturbations stay in the L2 ball with det targets (y+1) mod C, resume."""

from __future__ import annotations

import json

import pytest
import torch

from helpers_transfer import tiny_model, tiny_set
from robustlens.errors import UserError
from robustlens.threat import L2
from robustlens.transfer.construct import (
    construct_dataset,
    invert_representation,
    load_constructed,
    make_targets,
    representation_distance,
    train_and_evaluate,
)


def test_inversion_reduces_distance_and_stays_in_box():
    model = tiny_model(0)
    data = tiny_set(8, 16)
    x = data.float()
    x0 = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    d0 = representation_distance(model, x0, x)
    xr = invert_representation(model, x, x0, steps=30, step_size=0.1)
    d1 = representation_distance(model, xr, x)
    assert bool((d1 < 0.5 * d0).all()), (d0, d1)
    assert float(xr.min()) >= 0 and float(xr.max()) <= 1
    assert not model.training  # mode restored (tiny_model is in eval mode)


def test_robust_dataset_keeps_labels_and_starts_from_other_images():
    model = tiny_model(0)
    data = tiny_set(12, 16)
    ds = construct_dataset(model, data, "robust", steps=5, chunk_size=5, batch_size=4, show_progress=False)
    assert len(ds) == 12 and torch.equal(ds.labels, data.labels) and torch.equal(ds.original_labels, data.labels)
    assert ds.images.dtype == torch.float32 and float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1
    assert ds.to_imageset().images.dtype == torch.uint8


def test_det_targets_and_eps_ball():
    model = tiny_model(0)
    data = tiny_set(20, 16)
    ds = construct_dataset(model, data, "det", eps=0.5, steps=10, step_size=0.2, chunk_size=8, show_progress=False)
    assert torch.equal(ds.labels, (data.labels + 1) % 10)
    x = data.float()
    assert bool(L2(0.5).contains(ds.images, x).all())
    delta = (ds.images - x).flatten(1).norm(dim=1)
    assert float(delta.max()) <= 0.5 + 1e-4 and float(delta.mean()) > 0.3  # it actually moved
    # the perturbation pushes the standard model towards the target
    with torch.no_grad():
        t = ds.labels
        lp0 = torch.log_softmax(model(x), 1).gather(1, t[:, None])
        lp1 = torch.log_softmax(model(ds.images), 1).gather(1, t[:, None])
    assert float((lp1 - lp0).mean()) > 0


def test_rand_targets_are_uniform_and_seeded():
    y = torch.arange(5000) % 10
    t = make_targets("rand", y, 10, torch.Generator().manual_seed(0))
    counts = torch.bincount(t, minlength=10)
    assert int(counts.min()) > 400 and torch.equal(t, make_targets("rand", y, 10, torch.Generator().manual_seed(0)))


class Stop(Exception):
    pass


@pytest.mark.parametrize("kind", ["robust", "rand"])
def test_resume_equals_uninterrupted(tmp_path, kind):
    model = tiny_model(0)
    data = tiny_set(22, 12)
    kw = dict(steps=4, chunk_size=5, batch_size=3, seed=7, show_progress=False)
    if kind != "robust":
        kw["eps"] = 0.5
    full = construct_dataset(model, data, kind, out_dir=tmp_path / "a", **kw)

    def boom(i):
        if i == 1:
            raise Stop

    with pytest.raises(Stop):
        construct_dataset(model, data, kind, out_dir=tmp_path / "b", on_chunk=boom, **kw)
    chunks = sorted(p.name for p in (tmp_path / "b" / "chunks").iterdir())
    assert chunks == ["chunk_00000.npz", "chunk_00001.npz"] and not (tmp_path / "b" / "data.npz").exists()
    done = []
    resumed = construct_dataset(model, data, kind, out_dir=tmp_path / "b", on_chunk=done.append, **kw)
    assert done == [2, 3, 4]  # the two finished chunks were skipped
    assert torch.equal(resumed.images, full.images) and torch.equal(resumed.labels, full.labels)
    again = load_constructed(tmp_path / "b")
    assert torch.equal(again.images, full.images) and again.kind == kind
    assert json.loads((tmp_path / "b" / "construct.json").read_text())["status"] == "done"
    with pytest.raises(UserError, match="other settings"):
        construct_dataset(model, data, kind, out_dir=tmp_path / "b", **{**kw, "steps": 5})


def test_bad_input():
    model, data = tiny_model(0), tiny_set(10, 12)
    with pytest.raises(UserError, match="--kind"):
        construct_dataset(model, data, "weird", show_progress=False)
    with pytest.raises(UserError, match="--n"):
        construct_dataset(model, data, "det", n=11, show_progress=False)
    with pytest.raises(UserError, match="--eps"):
        construct_dataset(model, data, "robust", eps=0.5, show_progress=False)
    with pytest.raises(UserError, match="--eps"):
        construct_dataset(model, data, "det", eps=-1, show_progress=False)


def test_train_and_evaluate_runs():
    model, data = tiny_model(0), tiny_set(30, 12)
    ds = construct_dataset(model, data, "det", steps=3, show_progress=False)
    res = train_and_evaluate(ds, tiny_set(20, 12, seed=3), model_kwargs={"width": 8}, epochs=1, attack_steps=2, show_progress=False)
    for k in ("test_clean_accuracy", "test_robust_accuracy", "train_agreement_with_original_labels"):
        assert 0 <= res[k] <= 1
