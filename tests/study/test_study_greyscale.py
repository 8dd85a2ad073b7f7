"""A 1-channel study end to end (issue 20, item 7, must-show): digits-like greyscale images
(the procedural set's luma at 28 px, written in the MNIST IDX layout) through every default
stage at tiny sizes. It finishes; every model (STD, ADV and the judges) is a 1-channel model
with a 1-channel normalisation in its checkpoint; no stage errors; the probes that say
nothing on grey images are skipped with their reasons; filters are drawn as grey images."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch

from helpers_study import TINY_SPEC
from robustlens.study import load_spec, run_study

# the only stages a 1-channel IDX set may leave unmeasured, and why (no masks, boxes or conflict split)
EXPECTED_NOT_MEASURED = {"bias": "cue-conflict split", "localisation": "ground-truth boxes"}


def _idx(arr: np.ndarray) -> bytes:
    """The IDX layout of MNIST's files (as tests/data/helpers_data.py writes it)."""
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_grey_digits(root, n_train: int = 200, n_test: int = 64) -> None:
    """The procedural set (labels: shape) at 28 px as BT.601 luma, as IDX files."""
    from robustlens.data import load

    root.mkdir(parents=True, exist_ok=True)
    for prefix, split, n in (("train", "train", n_train), ("t10k", "test", n_test)):
        s = load("trifeature", split, size=28, n_train=n_train, n_test=n_test, label="shape", contrast=0.2)
        x = s.images.double()
        luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).round().clamp(0, 255).to(torch.uint8)
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(luma.numpy()[:n]))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(s.labels.numpy().astype(np.uint8)[:n]))


def grey_spec(folder) -> str:
    """The tiny spec on the grey digits, the greyscale probe on, models trained for a few steps."""
    data = folder / "digits"
    write_grey_digits(data)
    text = TINY_SPEC.format(out=str(folder / "runs"))
    text = text.replace("options = { contrast = 0.07, n_conflict = 64 }", f'source = "{data}"\nsize = 28\noptions = {{}}')
    text = text.replace("[models.std]\nepochs = 1", "[models.std]\nepochs = 2\nbatch_size = 50")
    text = text.replace("[models.adv]\nepochs = 1", "[models.adv]\nepochs = 2\nbatch_size = 50")
    text = text.replace("median_repeats = 1", "median_repeats = 1\ngreyscale = true")
    text = text.replace("[stages.saliency]\nn = 2", "[stages.saliency]\nn = 1")  # one row per figure: half the drawing
    judges = "".join(f"[models.{j}]\nepochs = 1\nbatch_size = 50\narch_options = {{ width = 4 }}\n"
                     f"train_options = {{ check_size = 0 }}\n" for j in ("judge", "judge_adv"))
    faithfulness = ("[stages.faithfulness]\nn = 2\nsteps = 2\nroad_fractions = [0.5]\ninfidelity_samples = 2\n"
                    "sensitivity_samples = 1\nsmoothgrad_samples = 2\nig_steps = 2\n")
    return text.replace("[stages.robustness]", judges + faithfulness + "[stages.robustness]")


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("grey")
    (folder / "grey.toml").write_text(grey_spec(folder))
    log = io.StringIO()
    try:
        summary = run_study(load_spec(folder / "grey.toml"), stream=log)
    finally:
        torch.set_num_threads(before)
    run = folder / "runs" / "tiny"
    return run, summary, json.loads((run / "results.json").read_text()), log.getvalue()


def test_grey_study_finishes_and_no_stage_errors(grey_run):
    run, summary, res, log = grey_run
    assert res["results"]["data"]["channels"] == 1 and res["results"]["data"]["resolution"] == [28, 28]
    statuses = {k: v["status"] for k, v in res["stages"].items()}
    assert {"train_std", "train_adv", "robustness", "transforms", "neurons", "saliency", "featvis", "sanity",
            "faithfulness", "generation"} <= {k for k, v in statuses.items() if v == "measured"}, statuses
    for stage, status in statuses.items():
        if status != "measured":
            assert stage in EXPECTED_NOT_MEASURED, (stage, res["results"][stage])
            assert EXPECTED_NOT_MEASURED[stage] in res["results"][stage]["reason"]
    assert all(o.status in ("done", "not_measured") for o in summary["outputs"].values())
    assert (run / "report.html").exists() and "Traceback" not in log


def test_every_model_is_a_one_channel_model(grey_run):
    run = grey_run[0]
    sidecars = sorted((run / "checkpoints").glob("*.json"))
    assert {p.stem for p in sidecars} == {"std", "adv", "judge", "judge_adv"}
    for p in sidecars:
        side = json.loads(p.read_text())
        assert side["model_kwargs"]["in_channels"] == 1, p.name
        assert len(side["normalize"]["mean"]) == 1 and len(side["normalize"]["std"]) == 1, p.name
    from robustlens.models.checkpoint import load_checkpoint

    model = load_checkpoint(run / "checkpoints" / "adv.safetensors")[0]
    assert model.first_conv.in_channels == 1
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    # the models were trained (a few SGD steps): STD and ADV differ from each other
    std = load_checkpoint(run / "checkpoints" / "std.safetensors")[0]
    assert not torch.equal(std.first_conv.weight, model.first_conv.weight)


def test_skipped_probes_carry_their_reasons(grey_run):
    run, _, res, _ = grey_run
    tr = res["results"]["transforms"]
    assert "greyscale (the data is already greyscale)" in tr["skipped"]
    assert "silhouette (the data has no masks)" in tr["skipped"]
    assert "Skipped greyscale (the data is already greyscale)." in tr["notes"]
    for m in ("std", "adv"):
        entry = tr["models"][m]
        assert "greyscale" not in entry  # never a meaningless drop of 0
        for probe in ("invert", "stylize", "edges", "edges_light"):
            assert 0.0 <= entry[probe] <= 1.0, (m, probe)
    html = (run / "report.html").read_text()
    assert "the data is already greyscale" in html


def test_filters_and_visualisations_are_drawn_grey(grey_run):
    run, _, res, _ = grey_run
    fv = res["results"]["featvis"]
    for m in ("std", "adv"):
        assert f"filters_{m}" in fv["figures"], fv["figures"]
        assert "grey images: the model takes 1 channel" in fv["captions"][f"filters_{m}"]
    assert any("colour decorrelation" in n for n in fv["notes"])
    folder = next((run / "stages").glob("featvis-*"))
    assert all((folder / f).stat().st_size > 500 for f in fv["figures"].values())
    neurons = res["results"]["neurons"]["models"]
    assert neurons["std"]["filters"] == 4 and neurons["std"]["kernel"] == [3, 3]


def test_transforms_stage_skips_greyscale_only_on_grey_data():
    from robustlens.study.spec import Spec
    from robustlens.study.stages import transforms

    p = {**transforms.params(Spec()), "greyscale": True}
    grey, skipped = transforms._probes(p, has_masks=True, channels=1)
    assert "greyscale" not in [pr.name for pr in grey] and skipped == ["greyscale (the data is already greyscale)"]
    assert {"invert", "stylize"} <= {pr.name for pr in grey}
    colour, skipped = transforms._probes(p, has_masks=True, channels=3)
    assert "greyscale" in [pr.name for pr in colour] and skipped == []


def test_featvis_builds_grey_models_as_the_train_stage_does():
    from robustlens.study.spec import ModelSpec, Spec
    from robustlens.study.stages.featvis import _arch_of

    spec = Spec()
    spec.models["std"] = ModelSpec(arch="resnet18")
    assert _arch_of(spec, "std", 1) == ("resnet18", {"in_channels": 1})
    assert _arch_of(spec, "std", 3) == ("resnet18", {})
    spec.models["std"] = ModelSpec(arch="small_cnn", arch_options={"width": 4})
    assert _arch_of(spec, "std", 3) == ("small_cnn", {"in_channels": 3, "width": 4})
