"""`robustlens train` end to end on a tiny procedural set, and its one-line errors."""

import json

import pytest
import torch

from robustlens.cli import main

TINY = "trifeature:size=16,n_train=96,n_test=32,n_conflict=8"


def test_cli_trains_and_writes_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", TINY, "--mode", "fgsm-rs", "--eps", "8/255", "--epochs", "1", "--batch-size", "32",
                 "--width", "4", "--attack-steps", "1", "--check-steps", "2", "--out", str(out), "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epoch"] == 1 and summary["out"] == str(out)
    for name in ("last.safetensors", "last.json", "best.safetensors", "state.safetensors", "state.json",
                 "metrics.jsonl", "train_config.json"):
        assert (out / name).exists(), name
    side = json.loads((out / "last.json").read_text())
    assert side["training"]["mode"] == "fgsm-rs" if "training" in side else True
    # --resume of a finished run is a no-op that succeeds.
    assert main(["train", "--data", TINY, "--mode", "fgsm-rs", "--eps", "8/255", "--epochs", "1", "--batch-size",
                 "32", "--width", "4", "--attack-steps", "1", "--check-steps", "2", "--out", str(out), "--quiet",
                 "--resume"]) == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mode", "madry-plus"], "unknown training mode 'madry-plus'; expected one of std, fgsm, fgsm-rs, pgd, trades"),
        (["--arch", "resnet9000"], "unknown architecture 'resnet9000'"),
        (["--eps", "8/255"], "--mode std is not adversarial"),
        (["--mode", "pgd", "--eps", "0"], "needs eps > 0"),
        (["--batch-size", "4096"], "larger than the training set"),
        (["--resume"], "--resume: needs --out"),
        (["--mode", "fgsm-rs", "--co-remedy", "retry"], "--co-remedy: unknown remedy 'retry'; expected one of pgd, stop, none"),
        (["--mode", "trades", "--grad-align", "0.2"], "--grad-align: GradAlign regularises FGSM-style training"),
        (["--tensorboard", "--batch-size", "32", "--out", "OUT"], "--tensorboard: the tensorboard package is not installed"),
    ],
)
def test_cli_errors(args, message, capsys, tmp_path):
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    try:
        import tensorboard  # noqa: F401

        if "--tensorboard" in args:
            pytest.skip("tensorboard is installed here")
    except ImportError:
        pass
    code = main(["train", "--data", TINY, "--epochs", "1", "--width", "4", "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_train_model_convenience(tmp_path):
    from robustlens.models import ImageClassifier
    from robustlens.train import train_model

    model, result = train_model(TINY, "small_cnn", mode="fgsm", epochs=1, batch_size=32, check_steps=2,
                                model_kwargs={"width": 4}, out_dir=tmp_path, log=False, progress=False)
    assert isinstance(model, ImageClassifier) and result.config.mode == "fgsm"
    assert result.config.kind == "trifeature" and len(result.history) == 1
    from robustlens.models.checkpoint import load_checkpoint

    loaded, meta = load_checkpoint(tmp_path / "last.safetensors")
    x = torch.rand(2, 3, 16, 16)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=1e-5, atol=1e-5)
