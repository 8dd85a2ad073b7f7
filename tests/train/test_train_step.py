"""The one optimiser step (``robustlens.train.step``): train() is a loop of sgd_step calls, a
Recipe refuses what it cannot do, and adv_fraction trains on a mixed batch as documented."""

import dataclasses
import math

import pytest
import torch

from helpers_train import toy_model, toy_set
from robustlens.data.loader import TensorLoader
from robustlens.threat import make_threat
from robustlens.train import EpochMeter, Nets, Recipe, Schedule, TrainConfig, make_optimizer, sgd_step, train

EPS = 8 / 255


def test_train_is_a_loop_of_sgd_steps(one_thread):
    """train() (std, no check set) gives the very weights of a hand-written loop over sgd_step."""
    data = toy_set(n=96, size=8)
    cfg = TrainConfig(mode="std", epochs=2, batch_size=32, lr=0.05, schedule="cosine", check_size=0, channels_last=False, augment=False,
                      log=False, progress=False)
    trained = toy_model()
    train(trained, data, cfg, device="cpu")

    model = toy_model()
    rc = cfg.resolve("cifar")
    opt = make_optimizer(model, rc)
    loader = TensorLoader(data, batch_size=32, shuffle=True, seed=rc.seed, augment=False, drop_last=True)
    sched = Schedule("cosine", 0.05, 2, len(loader))
    nets = Nets.single(model)
    for epoch in range(2):
        model.train()
        for b, (x, y) in enumerate(loader.epoch(epoch)):
            sgd_step(nets, opt, x, y, Recipe(), lr=sched(epoch * len(loader) + b))
    for k, v in trained.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_recipe_refuses_unknown_modes_and_missing_threats():
    with pytest.raises(ValueError, match="unknown mode 'fgm'"):
        Recipe(mode="fgm")
    with pytest.raises(ValueError, match="needs a threat"):
        Recipe(mode="pgd")
    r = Recipe.fgsm_rs(make_threat("linf", EPS))
    assert r.mode == "fgsm-rs" and r.step_size == pytest.approx(1.25 * EPS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.mode = "std"


class Recorder(torch.nn.Module):
    """The model, remembering the batches its training forward saw."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)


def test_adv_fraction_trains_on_adversarial_head_and_clean_tail(one_thread):
    model = toy_model()
    x, y = toy_set(n=10, size=8).float(), torch.arange(10) % 4
    rec = Recorder(model)
    nets = Nets(train=rec, attack=model, clean=model, raw=model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    recipe = Recipe(mode="fgsm-rs", threat=make_threat("linf", EPS), step_size=1.25 * EPS, adv_fraction=0.5)
    out = sgd_step(nets, opt, x, y, recipe, lr=0.01, generator=torch.Generator().manual_seed(0))
    (batch,) = rec.seen
    assert out.n_adv == math.ceil(0.5 * 10) == 5 and out.clean_logits is None
    assert torch.equal(batch[5:], x[5:])  # the clean tail
    assert all(not torch.equal(batch[i], x[i]) for i in range(5))  # the adversarial head moved
    assert bool(make_threat("linf", EPS).contains(batch[:5], x[:5]).all())
    meter = EpochMeter(torch.device("cpu"))
    meter.add(out, y, recipe.mode)
    assert meter.counts == [10, 5, 5]


def test_fgsm_step_reports_clean_logits_of_its_first_forward(one_thread):
    model = toy_model()
    x, y = toy_set(n=8, size=8).float(), torch.arange(8) % 4
    with torch.no_grad():
        clean = model(x)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    out = sgd_step(Nets.single(model), opt, x, y, Recipe(mode="fgsm", threat=make_threat("linf", EPS), step_size=EPS), lr=0.01)
    torch.testing.assert_close(out.clean_logits, clean)
    meter = EpochMeter(torch.device("cpu"))
    meter.add(out, y, "fgsm")
    assert meter.counts == [8, 8, 8]  # every example is adversarial, and its clean logits are counted too
    loss, acc = meter.mean_loss_and_accuracy()
    assert loss == pytest.approx(float(out.loss)) and 0 <= acc <= 1
    assert EpochMeter(torch.device("cpu"), meter.state()).state() == meter.state()  # a resume carries the sums
