"""``robustlens explain`` end to end on tiny checkpoints."""

from __future__ import annotations

import json

import torch

from helpers_explain import small_model
from robustlens.cli import main
from robustlens.models.checkpoint import save_checkpoint


def _ckpt(tmp_path, name, seed):
    path = tmp_path / f"{name}.safetensors"
    save_checkpoint(path, small_model(seed=seed, dtype=torch.float32), {})
    return str(path)


def test_explain_writes_grids_and_json(tmp_path, capsys):
    std, adv = _ckpt(tmp_path, "std", 0), _ckpt(tmp_path, "adv", 1)
    out = tmp_path / "out"
    rc = main([
        "explain", "--checkpoint", std, "--checkpoint", adv, "--data", "trifeature:n_train=16,n_test=8",
        "--n", "2", "--methods", "vanilla,guided,smoothgrad,ig,gradcam", "--samples", "2", "--steps", "3",
        "--random-model", "--featvis", "body.8:0,body.8:1", "--featvis-steps", "2", "--sanity", "--localize",
        "--localize-n", "4", "--judge", std, "--generate-steps", "2", "--out", str(out),
    ])
    assert rc == 0
    res = json.loads((out / "explain.json").read_text())
    assert set(res["models"]) == {"std", "adv", "random"}
    assert len(res["saliency"]["stats"]) == 5 * 3
    for f in res["files"].values():
        assert (tmp_path / f).exists() if not f.startswith("/") else __import__("os").path.exists(f)
    assert res["sanity"]["adv"]["vanilla"]["layers"][1] == "fc"
    assert 0 <= res["localize"]["std"]["box_accuracy"] <= 1
    assert set(res["generate"]["models"]) == {"std", "adv", "random"}


def test_explain_errors(tmp_path, capsys):
    std = _ckpt(tmp_path, "std", 0)
    rc = main(["explain", "--checkpoint", std, "--data", "trifeature:n_train=16,n_test=8", "--methods", "vanila", "--out", str(tmp_path)])
    assert rc == 2 and "unknown" in capsys.readouterr().err
    rc = main(["explain", "--checkpoint", str(tmp_path / "missing.safetensors"), "--images", str(tmp_path), "--out", str(tmp_path)])
    assert rc == 2
    rc = main(["explain", "--checkpoint", std, "--images", str(tmp_path / "nothing"), "--out", str(tmp_path)])
    assert rc == 2 and "not a folder" in capsys.readouterr().err


def test_explain_image_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((torch.rand(20, 20, 3) * 255).byte().numpy()).save(folder / f"{i}.png")
    std = _ckpt(tmp_path, "std", 0)
    rc = main(["explain", "--checkpoint", std, "--images", str(folder), "--methods", "vanilla,loss", "--out", str(tmp_path / "o")])
    assert rc == 0
    res = json.loads((tmp_path / "o" / "explain.json").read_text())
    assert res["images"] == ["0.png", "1.png"]
