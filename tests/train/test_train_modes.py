"""Every training mode runs and learns; the adversarial examples obey the threat model."""

import pytest
import torch
import torch.nn.functional as F

from helpers_train import toy_model, toy_set
from robustlens.errors import UserError
from robustlens.threat import make_threat
from robustlens.train import TrainConfig, perturb, perturb_trades, train

EPS = 8 / 255


@pytest.mark.parametrize("mode", ["std", "fgsm", "fgsm-rs", "pgd", "trades"])
def test_each_mode_reduces_loss(modes_data, mode):
    model = toy_model()
    cfg = TrainConfig(mode=mode, epochs=3, batch_size=32, lr=0.05, schedule="constant", attack_steps=2,
                      check_size=32, check_steps=2, log=False, progress=False, early_stop=False)
    result = train(model, modes_data, cfg, device="cpu")
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.05, losses
    assert result.final["images_per_s"] > 0 and result.final["seconds"] > 0
    assert 0 <= result.final["check_robust_accuracy"] <= result.final["check_clean_accuracy"] + 1e-9
    assert not model.training
    if mode == "std":
        assert result.final["train_adv_accuracy"] is None
    if mode in ("fgsm", "trades", "std"):  # clean accuracy comes for free in these modes
        assert result.final["train_clean_accuracy"] is not None


def _model_and_batch():
    model = toy_model()
    x = toy_set(n=16, size=12).float()
    y = torch.arange(16) % 4
    return model, x, y


def test_fgsm_rs_examples_stay_in_ball_and_box():
    model, x, y = _model_and_batch()
    threat = make_threat("linf", EPS)
    g = torch.Generator().manual_seed(0)
    x_adv, _ = perturb(model, x, y, "fgsm-rs", threat, 1.25 * EPS, 1, g)
    assert bool(threat.contains(x_adv, x).all())
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert (x_adv - x).abs().max() > 0.9 * EPS  # the step really moved it to the boundary somewhere
    # Random start drawn from the generator: same seed, same examples; another seed, others.
    x2, _ = perturb(model, x, y, "fgsm-rs", threat, 1.25 * EPS, 1, torch.Generator().manual_seed(0))
    x3, _ = perturb(model, x, y, "fgsm-rs", threat, 1.25 * EPS, 1, torch.Generator().manual_seed(1))
    assert torch.equal(x_adv, x2) and not torch.equal(x_adv, x3)


def test_fgsm_matches_reference_and_uses_input_gradients_only():
    model, x, y = _model_and_batch()
    model.eval()
    threat = make_threat("linf", EPS)
    x_adv, first = perturb(model, x, y, "fgsm", threat, EPS, 1)
    # No weight gradient was computed or accumulated.
    assert all(p.grad is None for p in model.parameters())
    # Reference (Goodfellow et al. 2015): x + eps * sign(grad_x CE), clipped to [0, 1], via backward().
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(model(xr), y).backward()
    ref = (x + EPS * xr.grad.sign()).clamp(0, 1)
    torch.testing.assert_close(x_adv, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(first, model(x).detach())  # zero start: first forward is clean


def test_pgd_stays_in_ball_and_increases_loss():
    model, x, y = _model_and_batch()
    model.eval()
    threat = make_threat("linf", EPS)
    g = torch.Generator().manual_seed(0)
    x_adv, _ = perturb(model, x, y, "pgd", threat, 2.5 * EPS / 5, 5, g)
    assert bool(threat.contains(x_adv, x).all())
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    x_t = perturb_trades(model, x, threat, 2.5 * EPS / 5, 5, torch.Generator().manual_seed(0))
    assert bool(threat.contains(x_t, x).all())
    with torch.no_grad():
        p = F.softmax(model(x), 1)
        kl = F.kl_div(F.log_softmax(model(x_t), 1), p, reduction="sum")
    assert kl > 0


def test_mixed_batches_report_clean_accuracy(modes_data):
    model = toy_model()
    cfg = TrainConfig(mode="fgsm-rs", adv_fraction=0.5, epochs=1, batch_size=32, lr=0.05, check_size=0,
                      log=False, progress=False)
    r = train(model, modes_data, cfg, device="cpu")
    assert r.final["train_clean_accuracy"] is not None and r.final["train_adv_accuracy"] is not None
    assert "check_robust_accuracy" not in r.final


def test_l2_threat_trains(modes_data):
    model = toy_model()
    cfg = TrainConfig(mode="pgd", threat="l2", eps=0.5, attack_steps=2, epochs=1, batch_size=32, lr=0.05,
                      check_size=32, check_steps=2, log=False, progress=False)
    r = train(model, modes_data, cfg, device="cpu")
    assert r.config.threat == "l2" and r.final["check_eps"] == 0.5


def test_catastrophic_overfitting_stops_and_restores_best(modes_data, monkeypatch, tmp_path):
    import robustlens.train.loop as loop
    from safetensors.torch import load_file

    seq = iter([(0.9, 0.50), (0.9, 0.60), (0.95, 0.10), (0.95, 0.05)])
    monkeypatch.setattr(loop, "_pgd_accuracy", lambda *a, **k: next(seq))
    model = toy_model()
    cfg = TrainConfig(mode="fgsm-rs", epochs=4, batch_size=32, lr=0.05, log=False, progress=False, check_size=32,
                      co_remedy="stop")
    r = train(model, modes_data, cfg, out_dir=tmp_path, device="cpu")
    assert r.catastrophic_overfitting == [3] and r.stopped_early and len(r.history) == 3
    assert r.best_epoch == 2 and r.best_metric == 0.60
    assert r.history[2]["catastrophic_overfitting"] is True
    best = load_file(str(tmp_path / "best.safetensors"))
    for k, v in model.state_dict().items():  # the returned model holds the best weights
        assert torch.equal(v.contiguous(), best[k]), k
    last = load_file(str(tmp_path / "last.safetensors"))
    assert any(not torch.equal(last[k], best[k]) for k in best)


def test_bad_config_values():
    with pytest.raises(UserError, match="unknown training mode 'fgm'.*fgsm-rs"):
        TrainConfig(mode="fgm").resolve("cifar")
    with pytest.raises(UserError, match="--eps.*not adversarial"):
        TrainConfig(mode="std", eps="8/255").resolve("cifar")
    with pytest.raises(UserError, match="needs eps > 0"):
        TrainConfig(mode="fgsm-rs", eps=0).resolve("cifar")
    with pytest.raises(UserError, match="adv-fraction"):
        TrainConfig(mode="pgd", adv_fraction=0).resolve("cifar")
    c = TrainConfig(mode="fgsm-rs").resolve("cifar")
    assert c.eps == pytest.approx(8 / 255) and c.step_size == pytest.approx(1.25 * 8 / 255)
    assert (c.epochs, c.batch_size, c.lr, c.schedule) == (15, 128, 0.2, "cyclic")
    assert c.co_remedy == "pgd" and not c.early_stop and c.keep_best and (c.augment, c.flip) == (True, True)
    assert TrainConfig(mode="fgsm-rs").resolve("cifar", "cuda").batch_size == 512
    assert TrainConfig(mode="pgd", attack_steps=7).resolve("cifar").step_size == pytest.approx(2.5 * (8 / 255) / 7)


def test_batch_larger_than_data(modes_data):
    with pytest.raises(UserError, match="batch-size 1000 is larger than the training set"):
        train(toy_model(), modes_data, TrainConfig(batch_size=1000, epochs=1, log=False), device="cpu")


def test_model_classes_must_match(modes_data):
    with pytest.raises(UserError, match="model has 7 outputs"):
        train(toy_model(classes=7), modes_data, TrainConfig(epochs=1, batch_size=32, log=False), device="cpu")


def test_model_outside_the_zoo_is_saved_with_a_plain_sidecar(modes_data, tmp_path):
    import json

    class Wrapped(torch.nn.Module):  # e.g. a late-fusion pair: not a registered ImageClassifier
        def __init__(self):
            super().__init__()
            self.inner = toy_model()

        def forward(self, x):
            return self.inner(x)

    r = train(Wrapped(), modes_data, TrainConfig(epochs=1, batch_size=32, check_size=0, log=False, progress=False),
              out_dir=tmp_path, device="cpu")
    side = json.loads((tmp_path / "last.json").read_text())
    assert side["arch"] == "Wrapped" and side["training"]["mode"] == "std" and r.checkpoint.exists()
