"""``robustlens attack`` end to end on a tiny checkpoint and the procedural data set."""

from __future__ import annotations

import json

import pytest
import torch

from robustlens.cli import main

DATA = "trifeature:size=16,n_train=8,n_test=24,n_conflict=8"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from robustlens.models import create
    from robustlens.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create("small_cnn", 10, width=4)
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    save_checkpoint(path, model, {})
    return path


@pytest.mark.parametrize("attack,extra", [("pgd", ["--steps", "2", "--restarts", "2"]), ("autoattack", ["--steps", "2", "--queries", "3"])])
def test_attack_cli_writes_json(ckpt, tmp_path, capsys, attack, extra):
    out = tmp_path / "r.json"
    rc = main(["attack", "--checkpoint", str(ckpt), "--data", DATA, "--n", "12", "--eps", "8/255", "--attack", attack, "--out", str(out), *extra])
    assert rc == 0
    text = capsys.readouterr().out
    assert "clean accuracy" in text and "robust accuracy" in text
    res = json.loads(out.read_text())
    assert res["config"]["threat"] == {"norm": "linf", "eps": pytest.approx(8 / 255)}
    m = res["metrics"]
    assert 0 <= m["robust_accuracy"] <= m["clean_accuracy"] <= 1
    assert set(m["per_attack"]) == ({"pgd"} if attack == "pgd" else {"apgd-ce", "apgd-t", "fab-t", "square"})
    assert m["mean_norm"] <= 8 / 255 + 1e-6 and m["seconds"] >= 0
    assert "torch" in res["versions"] and res["config"]["n"] == 12


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--eps", "2"], "above 1"),
        (["--eps=-1/255"], ">= 0"),
        (["--threat", "l7"], "linf, l2, l1"),
        (["--attack", "cw"], "fgsm, pgd, apgd-ce"),
    ],
)
def test_attack_cli_bad_input(ckpt, capsys, args, msg):
    rc = main(["attack", "--checkpoint", str(ckpt), "--data", DATA, "--n", "4", *args])
    assert rc == 2
    assert msg in capsys.readouterr().err


def test_attack_cli_checkpoint_without_normalisation(ckpt, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad.safetensors"
    shutil.copy(ckpt, bad)
    side = json.loads(ckpt.with_suffix(".json").read_text())
    side.pop("normalize", None)
    bad.with_suffix(".json").write_text(json.dumps(side))
    rc = main(["attack", "--checkpoint", str(bad), "--data", DATA, "--n", "4"])
    assert rc == 2
    assert "normalisation" in capsys.readouterr().err
