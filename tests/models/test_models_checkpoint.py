"""Checkpoints: safetensors + sidecar round trips, foreign imports, refusals, atomicity."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import pytest
import safetensors.torch
import torch

from robustlens.cli import main
from robustlens.errors import UserError
from robustlens.models import create
from robustlens.models.checkpoint import import_weights, load_checkpoint, save_checkpoint, sidecar_path


def _trained_like(name: str, num_classes: int = 4, seed: int = 0, size: int = 32, **kw):
    """A model whose BN statistics and weights are no longer at their initial values."""
    torch.manual_seed(seed)
    model = create(name, num_classes, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        model.train()
        model(torch.rand(4, 3, size, size))  # running_mean/var and num_batches_tracked move
    return model.eval()


def _x(size: int, n: int = 2, seed: int = 5) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# One model per family; custom normalisation so that restoring it is part of the check.
FAMILIES = [
    ("small_cnn", {"width": 8}, 16),
    ("preact_resnet18", {}, 32),
    ("resnet18", {}, 32),
    ("alexnet", {"hidden": 32}, 64),
    ("alexnet_bn", {"hidden": 32}, 64),
    ("wrn16_4", {}, 32),
    ("wrn28_10", {"depth": 10, "widen_factor": 2}, 32),
]


@pytest.mark.parametrize("name, kw, size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_round_trip_gives_identical_outputs(tmp_path: Path, name: str, kw: dict, size: int) -> None:
    model = _trained_like(name, size=size, mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3), **kw)
    classes = ["cat", "dog", "emu", "fox"]
    meta = {"classes": classes, "training": {"mode": "fgsm-rs", "eps": 8 / 255}, "metrics": {"acc": 0.75}, "seed": 3}
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    assert path.exists() and sidecar_path(path).exists()
    loaded, sc = load_checkpoint(path)
    x = _x(size)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    sd0, sd1 = model.state_dict(), loaded.state_dict()
    assert list(sd0) == list(sd1) and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    assert torch.equal(model.normalize.mean, loaded.normalize.mean) and torch.equal(model.normalize.std, loaded.normalize.std)
    assert loaded.arch == name and loaded.config == model.config and not loaded.training
    assert loaded.classes == classes and sc["classes"] == classes
    assert sc["metrics"] == {"acc": 0.75} and sc["training"]["mode"] == "fgsm-rs" and sc["seed"] == 3
    assert sc["versions"]["torch"] == torch.__version__ and sc["format_version"] == 1
    assert sc["num_parameters"] == sum(p.numel() for p in model.parameters())
    again, _ = load_checkpoint(sidecar_path(path))  # the sidecar path works too
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_round_trip_keeps_float64(tmp_path: Path) -> None:
    model = _trained_like("small_cnn", width=4).double()
    save_checkpoint(tmp_path / "d.safetensors", model)
    loaded, sc = load_checkpoint(tmp_path / "d.safetensors")
    x = _x(16).double()
    assert sc["dtype"] == "float64" and next(loaded.parameters()).dtype == torch.float64
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_sidecar_is_plain_json_and_weights_are_pickle_free(tmp_path: Path) -> None:
    model = _trained_like("small_cnn", width=4)
    save_checkpoint(tmp_path / "c.safetensors", model, {"classes": list("abcd")})
    sc = json.loads((tmp_path / "c.json").read_text())
    assert sc["arch"] == "small_cnn" and sc["num_classes"] == 4 and sc["model_kwargs"] == {"width": 4}
    assert sc["normalize"]["mean"] == pytest.approx([0.5, 0.5, 0.5])
    tensors = safetensors.torch.load_file(str(tmp_path / "c.safetensors"))
    assert set(tensors) == set(model.state_dict())
    assert sorted(os.listdir(tmp_path)) == ["c.json", "c.safetensors"]  # no temporary files left


# --- failures that must be clear -----------------------------------------------------------


def test_checkpoint_for_another_architecture_lists_keys(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "r.safetensors", _trained_like("resnet18"))
    sc_path = tmp_path / "r.json"
    sc = json.loads(sc_path.read_text())
    sc["arch"] = "resnet50"
    sc_path.write_text(json.dumps(sc))
    with pytest.raises(UserError) as e:
        load_checkpoint(tmp_path / "r.safetensors")
    msg = str(e.value)
    assert "do not fit resnet50" in msg and "another architecture" in msg
    assert "198 missing keys (layer1.0.conv3.weight" in msg
    assert "shape mismatches (layer1.0.conv1.weight: file (64, 64, 3, 3) vs model (64, 64, 1, 1)" in msg
    assert "\n" not in msg


def test_weights_and_sidecar_from_different_saves_are_not_paired(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "a.safetensors", _trained_like("small_cnn", width=4, seed=1))
    save_checkpoint(tmp_path / "b.safetensors", _trained_like("small_cnn", width=4, seed=2))
    os.replace(tmp_path / "b.json", tmp_path / "a.json")
    with pytest.raises(UserError, match="different saves"):
        load_checkpoint(tmp_path / "a.safetensors")


def test_missing_sidecar_explains_the_format_and_the_import_path(tmp_path: Path) -> None:
    model = _trained_like("small_cnn", width=4)
    safetensors.torch.save_file(model.state_dict(), str(tmp_path / "bare.safetensors"))
    with pytest.raises(UserError, match=r"no sidecar bare\.json.*models --import"):
        load_checkpoint(tmp_path / "bare.safetensors")
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nothing.safetensors")


def test_missing_normalisation_metadata_is_an_error(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "n.safetensors", _trained_like("small_cnn", width=4))
    sc = json.loads((tmp_path / "n.json").read_text())
    del sc["normalize"]
    (tmp_path / "n.json").write_text(json.dumps(sc))
    with pytest.raises(UserError, match="no normalisation metadata"):
        load_checkpoint(tmp_path / "n.safetensors")


def test_bad_meta_and_classes_are_user_errors(tmp_path: Path) -> None:
    model = _trained_like("small_cnn", width=4)
    with pytest.raises(UserError, match="3 class names given but the model has 4"):
        save_checkpoint(tmp_path / "x.safetensors", model, {"classes": ["a", "b", "c"]})
    with pytest.raises(UserError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path / "x.safetensors", model, {"seed": object()})
    with pytest.raises(UserError, match="contradicts the model"):
        save_checkpoint(tmp_path / "x.safetensors", model, {"arch": "resnet18"})
    assert not list(tmp_path.iterdir())


def test_failed_save_leaves_no_partial_file_and_keeps_the_earlier_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "m.safetensors"
    first = _trained_like("small_cnn", width=4, seed=1)
    save_checkpoint(path, first, {"metrics": {"acc": 0.1}})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    real_save = safetensors.torch.save_file

    def crash(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:  # half-written, then the process "dies"
            f.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _trained_like("small_cnn", width=4, seed=2), {"metrics": {"acc": 0.9}})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing new, nothing changed
    loaded, sc = load_checkpoint(path)
    x = _x(16)
    with torch.no_grad():
        assert torch.equal(loaded(x), first(x))
    assert sc["metrics"] == {"acc": 0.1}


# --- foreign weights -----------------------------------------------------------------------


def test_import_torchvision_state_dict(tmp_path: Path) -> None:
    src = _trained_like("resnet18", num_classes=7)  # default ImageNet normalisation, like torchvision
    torch.save(src.state_dict(), tmp_path / "resnet18.pth")
    model = import_weights(tmp_path / "resnet18.pth", "resnet18")  # num_classes read from fc
    x = _x(32)
    with torch.no_grad():
        assert torch.equal(model(x), src(x))
    assert model.num_classes == 7 and model.import_info["normalize_from"] == "architecture default"


def test_import_old_torchvision_file_without_num_batches_tracked(tmp_path: Path) -> None:
    src = _trained_like("resnet18", num_classes=3)
    sd = OrderedDict((k, v) for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked"))
    safetensors.torch.save_file(dict(sd), str(tmp_path / "old.safetensors"))
    model = import_weights(tmp_path / "old.safetensors", "resnet18")
    with torch.no_grad():
        assert torch.equal(model(_x(32)), src(_x(32)))


def test_import_robustness_checkpoint(tmp_path: Path) -> None:
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    src = _trained_like("resnet18", num_classes=5, mean=mean, std=std)
    sd = src.state_dict()
    model_sd = OrderedDict()
    model_sd["module.normalizer.new_mean"] = torch.tensor(mean).view(3, 1, 1)
    model_sd["module.normalizer.new_std"] = torch.tensor(std).view(3, 1, 1)
    for k, v in sd.items():
        model_sd[f"module.model.{k}"] = v
    for k, v in sd.items():  # the attacker's copy: different values, must be ignored
        model_sd[f"module.attacker.model.{k}"] = torch.zeros_like(v)
    model_sd["module.attacker.normalize.new_mean"] = torch.zeros(3, 1, 1)
    model_sd["module.attacker.normalize.new_std"] = torch.ones(3, 1, 1)
    ckpt = {"model": model_sd, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, "schedule": None, "epoch": 90}
    torch.save(ckpt, tmp_path / "checkpoint.pt.best")
    model = import_weights(tmp_path / "checkpoint.pt.best", "resnet18")
    x = _x(32)
    with torch.no_grad():
        assert torch.equal(model(x), src(x))
    info = model.import_info
    assert info["style"] == "robustness (MadryLab)" and info["normalize_from"] == "file"
    assert info["dropped_keys_count"] == len(sd) + 4
    assert model.normalize.to_dict()["std"] == pytest.approx(list(std))


def test_import_robustbench_state_dict(tmp_path: Path) -> None:
    src = _trained_like("wrn16_4", num_classes=10, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    sd = {f"module.{k}": v for k, v in src.state_dict().items()}
    # TRADES' WRN defines an unused sub_block1; RobustBench files carry its weights
    sd.update({f"module.sub_block1.layer.0.{k}": v.clone() for k, v in src.block1.layer[0].state_dict().items()})
    torch.save({"state_dict": sd, "epoch": 100}, tmp_path / "Carmon2019.pt")
    model = import_weights(tmp_path / "Carmon2019.pt", "wrn16_4", mean=(0, 0, 0), std=(1, 1, 1))
    x = _x(32)
    with torch.no_grad():
        assert torch.equal(model(x), src(x))
    assert model.import_info["style"].startswith("robustbench") and model.import_info["normalize_from"] == "argument"
    assert any(k.startswith("sub_block1.") for k in model.import_info["dropped_keys"])


def test_import_wrong_architecture_lists_keys(tmp_path: Path) -> None:
    torch.save(_trained_like("resnet18", num_classes=3).state_dict(), tmp_path / "r.pth")
    with pytest.raises(UserError, match=r"do not fit wrn16_4 .*missing keys \(conv1\.weight|do not fit wrn16_4 .*unexpected keys"):
        import_weights(tmp_path / "r.pth", "wrn16_4")
    with pytest.raises(UserError, match=r"only the classifier head differs: wrong number of classes"):
        import_weights(tmp_path / "r.pth", "resnet18", num_classes=10)


class _RunsCode:
    """Unpickling this object calls os.mkdir(marker): a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    sd = _trained_like("small_cnn", width=4).state_dict()
    torch.save({"state_dict": sd, "payload": _RunsCode(marker)}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match=r"refused: loading this file would execute pickled code \(it references \w+\.mkdir\)"):
        import_weights(tmp_path / "evil.pth", "small_cnn", model_kwargs={"width": 4})
    assert not marker.exists()
    # the CLI refuses too, with a one-line error and exit status 2
    assert main(["models", "--import", str(tmp_path / "evil.pth"), "--arch", "small_cnn", "--out", str(tmp_path / "o.safetensors")]) == 2
    assert not marker.exists() and not (tmp_path / "o.safetensors").exists()
    # control, without running it: the file's pickle really calls mkdir on the marker path
    import pickletools
    import zipfile

    with zipfile.ZipFile(tmp_path / "evil.pth") as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    strings = [arg for op, arg, _ in pickletools.genops(pkl) if isinstance(arg, str)]
    assert any(s.split(" ")[-1] == "mkdir" for s in strings) and str(marker) in strings


def test_unreadable_or_odd_files_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(UserError, match="not a readable PyTorch weights file"):
        import_weights(tmp_path / "junk.pt", "small_cnn")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(UserError, match="no state dict found"):
        import_weights(tmp_path / "list.pt", "small_cnn")
    with pytest.raises(UserError, match="not found"):
        import_weights(tmp_path / "missing.pt", "small_cnn")
    with pytest.raises(UserError, match="give both or neither"):
        torch.save(create("small_cnn", 2, width=4).state_dict(), tmp_path / "ok.pt")
        import_weights(tmp_path / "ok.pt", "small_cnn", mean=(0.5, 0.5, 0.5), model_kwargs={"width": 4})


def test_cli_import_then_show_round_trip(tmp_path: Path, capsys) -> None:
    src = _trained_like("preact_resnet18", num_classes=4)
    torch.save(src.state_dict(), tmp_path / "fast_at.pth")
    out = tmp_path / "conv" / "fast_at.safetensors"
    rc = main(["models", "--import", str(tmp_path / "fast_at.pth"), "--arch", "preact_resnet18", "--out", str(out), "--classes", "a,b,c,d"])
    assert rc == 0
    model, sc = load_checkpoint(out)
    with torch.no_grad():
        assert torch.equal(model(_x(32)), src(_x(32)))
    assert sc["classes"] == ["a", "b", "c", "d"] and sc["imported_from"].endswith("fast_at.pth")
    assert main(["models", "--show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "preact_resnet18, 4 classes" in text and "classes: a, b, c, d" in text
    assert main(["models", "--show", str(tmp_path / "fast_at.pth")]) == 2  # a foreign file is not a checkpoint
