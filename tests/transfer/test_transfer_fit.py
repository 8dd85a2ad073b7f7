"""The transfer fits go through the shared step (robustlens.train.step.sgd_step) and keep their
numbers: sgd_fit and the linear probe equal hand-written references of their own loops; the
fusion pattern's "best" and "gap" helpers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from helpers_transfer import tiny_model, tiny_set
from robustlens.threat import make_threat
from robustlens.transfer._loops import augment_crop_flip, batch_order, sgd_fit
from robustlens.transfer.fusion import best_variant, fit_linear_head, gap_to_best, new_head, paper_pattern, within_best


def reference_sgd_fit(model, x, y, *, epochs, lr, batch_size, seed, augment=False, schedule="constant", adversary=None):
    """The transfer fit as it was written before it shared the step (the numbers to keep)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    total = epochs * max(1, math.ceil(len(x) / batch_size))
    g = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        loss_sum, correct, seen = 0.0, 0, 0
        for idx in batch_order(len(x), batch_size, g):
            xb, yb = x[idx], y[idx]
            if augment:
                xb = augment_crop_flip(xb, g)
            if schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            if adversary is not None:
                x0 = adversary.random_init(xb, g).requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(model(x0), yb), x0)
                xb = adversary.project(adversary.ascent_step(x0.detach(), grad, 1.25 * adversary.eps), xb).detach()
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += float(loss.detach()) * len(yb)
            correct += int((out.argmax(1) == yb).sum())
            seen += len(yb)
    return {"loss": loss_sum / seen, "accuracy": correct / seen}


@pytest.mark.parametrize("kw", [{}, {"schedule": "cosine", "augment": True}, {"adversary": make_threat("linf", 8 / 255)},
                                {"adversary": make_threat("l2", 0.5), "schedule": "cosine"}],
                         ids=["constant", "cosine-augment", "fgsm-rs-linf", "fgsm-rs-l2"])
def test_sgd_fit_equals_its_reference(kw):
    data = tiny_set(28, 12)
    x, y = data.float(), data.labels
    ours, ref = tiny_model(0).train(), tiny_model(0).train()
    last = sgd_fit(ours, x, y, epochs=2, lr=0.05, batch_size=8, seed=3, show_progress=False, **kw)
    expected = reference_sgd_fit(ref, x, y, epochs=2, lr=0.05, batch_size=8, seed=3, **kw)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, ours.state_dict()[k]), k
    assert last == {**expected, "epoch": 2}


@pytest.mark.parametrize("standardize", [False, True])
def test_linear_probe_equals_its_reference(standardize):
    feats = torch.randn(30, 12, generator=torch.Generator().manual_seed(0)) * 3 + 1
    y = torch.arange(30) % 5
    ours = fit_linear_head(new_head(12, 5, 1), feats, y, epochs=3, lr=0.05, batch_size=8, seed=4, standardize=standardize)
    ref = new_head(12, 5, 1)
    m, s = feats.mean(0), feats.std(0, unbiased=False).clamp_min(1e-6)
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        for idx in batch_order(30, 8, g):
            f = (feats[idx] - m) / s if standardize else feats[idx]
            loss = F.cross_entropy(ref(f), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if standardize:
        with torch.no_grad():
            w = ref.weight / s
            ref.bias.sub_(w @ m)
            ref.weight.copy_(w)
    assert torch.equal(ours.weight, ref.weight) and torch.equal(ours.bias, ref.bias)


def test_pattern_helpers_define_best_and_gap():
    accs = {"std": 0.50, "adv": 0.40, "std+std": 0.61, "adv+adv": 0.605, "std+adv": 0.59}
    assert best_variant(accs) == "std+std"
    assert gap_to_best(accs, "std+adv") == pytest.approx(0.02)
    assert within_best(accs, "adv+adv", 0.005) and not within_best(accs, "adv+adv")
    rows = [{"variant": v, "dataset": "d", "resolution": r, "mean": a + (0.1 if (r == 8) == (v == "adv+adv") else 0.0)}
            for r in (8, 32) for v, a in accs.items()]
    pat = paper_pattern(rows)
    assert pat["per_dataset"]["d 8px"]["best"] == "adv+adv" and pat["per_dataset"]["d 32px"]["best"] == "std+std"
    assert pat["adv+adv_wins_lowest_resolution"] and pat["std+std_wins_highest_resolution"]
    assert pat["per_dataset"]["d 32px"]["std+adv_gap_to_best"] == gap_to_best({v: a for v, a in accs.items()}, "std+adv")
