"""channels_last where robustlens owns the model: the numbers stay the same (float tolerance), a
caller's model is never converted, and the decision follows the measured table."""

from __future__ import annotations

import copy

import pytest
import torch

from robustlens.attacks.evaluate import robust_accuracy
from robustlens.attacks.pgd import pgd
from robustlens.explain.saliency import grad_cam, integrated_gradients, vanilla_gradient
from robustlens.layout import fast_layout, is_channels_last, match_layout, wins
from robustlens.models.zoo import create
from robustlens.threat import make_threat

CL = torch.channels_last


def _pair(arch: str, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    m = create(arch, num_classes=10, **kw).eval()
    with torch.no_grad():  # BN statistics away from (0, 1), so the test sees them
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    m = m.to(dtype)
    cl = fast_layout(copy.deepcopy(m), "cpu")
    return m, cl


def test_decision_follows_the_table():
    small, _ = _pair("small_cnn", width=4)
    assert not is_channels_last(small)
    assert is_channels_last(fast_layout(small, "cpu"))
    assert wins("small_cnn", "cpu") and wins("preact_resnet18", "cpu")
    assert wins("resnet18", "cpu") and not wins("resnet101", "cpu")  # not measured: contiguous
    r = fast_layout(create("alexnet", num_classes=10), "cpu")
    assert not is_channels_last(r)  # not measured on CPU
    assert not wins("small_cnn", "mps")
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    assert not is_channels_last(fast_layout(plain, "cpu"))  # not a robustlens model: left alone


def test_logits_agree_float32():
    m, cl = _pair("small_cnn", width=8)
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = m(x), cl(match_layout(x, cl))
    assert match_layout(x, cl).is_contiguous(memory_format=CL)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_pgd_with_a_fixed_generator_agrees():
    """Float64: no rounding difference can flip a sign step, so the iterates must coincide."""
    m, cl = _pair("small_cnn", dtype=torch.float64, width=8)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (8,), generator=g)
    threat = make_threat("linf", 8 / 255)
    a = pgd(m, x, y, threat, steps=5, generator=torch.Generator().manual_seed(0))
    b = pgd(cl, match_layout(x, cl), y, threat, steps=5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_saliency_maps_agree_float32():
    """A wide ResNet has no max-pool, so no near-tie can move a gradient between pixels."""
    m, cl = _pair("wrn16_4", widen_factor=1)
    assert is_channels_last(cl)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([1, 7])
    for method in (vanilla_gradient, lambda mod, im, tg: integrated_gradients(mod, im, tg, steps=4)):
        a, b = method(m, x, t), method(cl, match_layout(x, cl), t)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))
    a, b = grad_cam(m, x, t), grad_cam(cl, match_layout(x, cl), t)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))


def test_robust_accuracy_never_converts_the_callers_model():
    m, cl = _pair("small_cnn", dtype=torch.float64, width=8)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(16, 3, 16, 16, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = m(x).argmax(1)  # every point clean-correct: all are attacked
    threat = make_threat("linf", 2 / 255)
    ra = robust_accuracy(m, (x, y), threat, steps=3, progress=False, checks_enabled=False)
    rb = robust_accuracy(cl, (x, y), threat, steps=3, progress=False, checks_enabled=False)
    assert not is_channels_last(m) and is_channels_last(cl)
    assert ra["clean_accuracy"] == rb["clean_accuracy"] == 1.0
    assert ra["robust_accuracy"] == rb["robust_accuracy"]
    assert ra["mean_norm"] == pytest.approx(rb["mean_norm"], rel=1e-10)


def test_cli_loads_checkpoints_in_the_fast_layout(tmp_path):
    from robustlens.cli_common import load_model
    from robustlens.models.checkpoint import save_checkpoint

    m, _ = _pair("small_cnn", width=4)
    save_checkpoint(tmp_path / "m.safetensors", m)
    loaded, _meta = load_model(str(tmp_path / "m.safetensors"), "cpu")
    assert is_channels_last(loaded)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), m(x), rtol=1e-5, atol=1e-6)
