"""``robustlens probe`` end to end on tiny procedural data and two tiny checkpoints."""

from __future__ import annotations

import json

import pytest

from robustlens.cli import main

SRC = "trifeature:size=16,n_train=0,n_test=24,n_conflict=24"


def test_probe_cli_writes_tables_figures_json(tmp_path, checkpoints):
    out = tmp_path / "out"
    rc = main(["probe", "--checkpoint", checkpoints[0], "--checkpoint", checkpoints[1], "--name", "std", "--name", "adv",
               "--data", SRC, "--probes", "blur,median,invert,greyscale,lowpass,highpass,stylize,silhouette,edges,bias,neurons",
               "--blur-sigmas", "0,1", "--median-repeats", "2", "--out", str(out), "--batch-size", "16", "--device", "cpu"])
    assert rc == 0
    res = json.loads((out / "probe.json").read_text())
    for f in ("probes.json", "probes.csv", "curves.png", "blur.png", "median.png", "bias.json", "neurons.json", "neurons.png"):
        assert (out / f).exists(), f
    rows = json.loads((out / "probes.json").read_text())
    assert {r["model"] for r in rows} == {"std", "adv"}
    assert [r["level"] for r in rows if r["model"] == "std" and r["probe"] == "median"] == [0, 1, 2]
    assert {r["model"] for r in res["bias"]} == {"std", "adv"}
    assert res["neurons"][0]["layer"] == "first_conv(filters)"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--probes", "blur,sharpen"], "valid probes: blur"),
        (["--probes", "median", "--median-kernel", "4"], "kernel_size"),
        (["--probes", "blur", "--blur-kernel", "0"], "kernel_size"),
        (["--probes", "blur", "--blur-sigmas", "1,-1"], "sigma"),
        (["--probes", "neurons", "--layers", "nope"], "valid layers"),
        (["--probes", "stylize", "--stylize-method", "adain"], "adain-encoder"),
        (["--probes", "invert", "--name", "a", "--name", "b"], "--name"),
    ],
)
def test_probe_cli_bad_input_one_line(tmp_path, checkpoints, capsys, extra, message):
    rc = main(["probe", "--checkpoint", checkpoints[0], "--data", SRC, "--out", str(tmp_path / "o"), "--device", "cpu", *extra])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_probe_cli_skips_greyscale_on_greyscale_data_with_the_reason(tmp_path, capsys):
    """On 1-channel images the greyscale probe is the identity: skipped, with the reason, not a 0 drop."""
    import numpy as np
    from PIL import Image

    import torch

    from robustlens.models import create
    from robustlens.models.checkpoint import save_checkpoint

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "data" / "test" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L").save(tmp_path / "data" / "test" / c / f"{i}.png")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.safetensors", create("small_cnn", num_classes=2, width=4, in_channels=1), {})
    out = tmp_path / "out"
    assert main(["probe", "--checkpoint", str(tmp_path / "m.safetensors"), "--data", str(tmp_path / "data"),
                 "--probes", "invert,greyscale", "--out", str(out), "--device", "cpu"]) == 0
    assert "skipping greyscale: the data is already greyscale" in capsys.readouterr().err
    res = json.loads((out / "probe.json").read_text())
    assert res["skipped"] == {"greyscale": "the data is already greyscale"}
    assert {r["probe"] for r in json.loads((out / "probes.json").read_text())} == {"clean", "invert"}
