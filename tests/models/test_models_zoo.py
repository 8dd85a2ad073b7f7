"""The model contract, checked on every registered architecture (tiny inputs, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustlens.errors import UserError
from robustlens.models import available, create
from robustlens.models.zoo import default_num_classes


# name -> (create kwargs that keep the test cheap, input size). wrn28_10 runs its forward
# checks at depth 10 / width 1 (same code path as 28-10, whose layout is checked below);
# ResNet-50/101 run at 16x16 (their stem and strides still leave a 1x1 map).
CHEAP = {
    "small_cnn": ({}, 16),
    "preact_resnet18": ({}, 32),
    "resnet18": ({}, 32),
    "resnet50": ({}, 16),
    "resnet101": ({}, 16),
    "alexnet": ({"hidden": 64}, 64),
    "alexnet_bn": ({"hidden": 64}, 64),
    "wrn28_10": ({"depth": 10, "widen_factor": 1}, 32),
    "wrn16_4": ({}, 32),
    "wrn34_10": ({"depth": 10, "widen_factor": 1}, 32),  # 34-10 / 70-16: key tables in test_models_catalogue
    "wrn70_16": ({"depth": 10, "widen_factor": 1}, 32),
    "cifar_resnet50": ({}, 16),
}


def test_every_registered_model_is_covered() -> None:
    assert set(available()) == set(CHEAP)
    assert all(isinstance(v, str) and v for v in available().values())


@pytest.mark.parametrize("name", sorted(CHEAP))
def test_model_contract(name: str) -> None:
    """Forward shape, penultimate -> head == forward, input gradients, normalisation first,
    one nn.ReLU module per use (guided backprop hooks them), other input sizes, eval-mode
    batch independence."""
    kw, size = CHEAP[name]
    torch.manual_seed(0)
    model = create(name, 5, **kw).eval()
    for p in model.parameters():  # input gradients only: cheaper, and what attacks/saliency need
        p.requires_grad_(False)
    assert model.num_classes == 5 and model.arch == name
    assert isinstance(model.head, nn.Linear) and model.head.in_features == model.num_features
    assert isinstance(model.first_conv, nn.Conv2d) and model.first_conv.in_channels == 3

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    calls = {id(m): 0 for m in relus}
    handles = [m.register_forward_hook(lambda mod, i, o: calls.__setitem__(id(mod), calls[id(mod)] + 1)) for m in relus]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, size, size, generator=g, requires_grad=True)
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    assert relus and all(c == 1 for c in calls.values()), sorted(calls.values())
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out[:, 0].sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0

    with torch.no_grad():
        feats = model.penultimate(x)
        assert feats.shape == (2, model.num_features)
        assert torch.equal(model.head(feats), out)
        # the normalisation is the first layer, with the model's own statistics
        mean, std = model.normalize.mean, model.normalize.std
        assert torch.allclose(model.head(model.forward_features((x - mean) / std)), out, atol=1e-5)
        model.normalize.set([0.2, 0.3, 0.4], [0.5, 0.6, 0.7])
        changed = model(x)
        assert torch.allclose(changed, model.head(model.forward_features((x - torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.6, 0.7]).view(1, 3, 1, 1))), atol=1e-5)
        assert not torch.allclose(changed, out)
        # another input size, and batch independence in eval mode
        y = torch.rand(3, 3, size + 8, size + 16, generator=g)
        big = model(y)
        assert big.shape == (3, 5)
        assert torch.allclose(big[:1], model(y[:1]), rtol=1e-4, atol=1e-4)
    assert not any(k.startswith("normalize") for k in model.state_dict())
    assert {n for n, _ in model.named_buffers()} >= {"normalize.mean", "normalize.std"}


def test_default_normalisation_per_family() -> None:
    imagenet = [0.485, 0.456, 0.406]
    cifar = [0.4914, 0.4822, 0.4465]
    for name, kw in (("resnet18", {}), ("alexnet_bn", {"hidden": 8})):
        assert create(name, 2, **kw).normalize.to_dict()["mean"] == pytest.approx(imagenet)
    for name, kw in (("preact_resnet18", {}), ("wrn16_4", {})):
        assert create(name, 2, **kw).normalize.to_dict()["mean"] == pytest.approx(cifar)
    assert default_num_classes("resnet50") == 1000 and default_num_classes("wrn28_10") == 10


def test_create_records_its_arguments() -> None:
    with torch.device("meta"):
        m = create("wrn28_10", 7, depth=16, widen_factor=2, mean=(0.1, 0.2, 0.3))
    assert m.config == {"num_classes": 7, "depth": 16, "widen_factor": 2, "mean": [0.1, 0.2, 0.3]}
    assert m.arch == "wrn28_10"


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(UserError, match="did you mean 'resnet18'"):
        create("resnet81")
    with pytest.raises(UserError, match="num_classes"):
        create("small_cnn", 0)
    with pytest.raises(UserError, match="unknown model option 'widht'"):
        create("small_cnn", 10, widht=3)
    with pytest.raises(UserError, match="depth"):
        create("wrn28_10", 10, depth=27)
    with pytest.raises(UserError, match="std must be positive"):
        create("small_cnn", 10, std=(0.5, 0.0, 0.5))


# --- layouts that foreign checkpoints rely on ---------------------------------------------

WRN28_10_KEYS = {  # RobustBench / TRADES wide_resnet.py, 10 classes
    "conv1.weight": (16, 3, 3, 3),
    "block1.layer.0.bn1.weight": (16,),
    "block1.layer.0.conv1.weight": (160, 16, 3, 3),
    "block1.layer.0.convShortcut.weight": (160, 16, 1, 1),
    "block1.layer.3.conv2.weight": (160, 160, 3, 3),
    "block2.layer.0.convShortcut.weight": (320, 160, 1, 1),
    "block2.layer.0.conv1.weight": (320, 160, 3, 3),
    "block3.layer.0.convShortcut.weight": (640, 320, 1, 1),
    "block3.layer.3.bn2.running_var": (640,),
    "bn1.weight": (640,),
    "bn1.num_batches_tracked": (),
    "fc.weight": (10, 640),
    "fc.bias": (10,),
}

PREACT18_KEYS = {  # locuslab/fast_adversarial preact_resnet.py
    "conv1.weight": (64, 3, 3, 3),
    "layer1.0.bn1.weight": (64,),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer2.0.bn1.weight": (64,),
    "layer2.0.shortcut.0.weight": (128, 64, 1, 1),
    "layer4.1.conv2.weight": (512, 512, 3, 3),
    "bn.weight": (512,),
    "linear.weight": (10, 512),
    "linear.bias": (10,),
}


def _shapes(name: str, **kw) -> dict[str, tuple]:
    with torch.device("meta"):
        m = create(name, 10, **kw)
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def test_wrn28_10_has_the_robustbench_layout() -> None:
    ours = _shapes("wrn28_10")
    for k, s in WRN28_10_KEYS.items():
        assert ours[k] == s, k
    # 1 stem conv + 12 blocks x (2 BN x 5 + 2 conv) + 3 shortcuts + final BN (5) + fc (2)
    assert len(ours) == 1 + 12 * 12 + 3 + 5 + 2
    assert not any("convShortcut" in k for k in ours if ".layer.0." not in k)
    n = sum(math.prod(s) for k, s in ours.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert n == 36_479_194  # WRN-28-10 on CIFAR-10 (Zagoruyko & Komodakis 2016: 36.5 M)


def test_preact_resnet18_has_the_fast_adversarial_layout() -> None:
    ours = _shapes("preact_resnet18")
    for k, s in PREACT18_KEYS.items():
        assert ours[k] == s, k
    assert not any(k.startswith("layer1.") and "shortcut" in k for k in ours)
    assert sum(1 for k in ours if "shortcut" in k) == 3


def test_alexnet_features_is_torchvisions_conv_stack() -> None:
    m = create("alexnet", 10, hidden=32)
    assert isinstance(m.features, nn.Sequential)
    assert [type(l).__name__ for l in m.features] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d"]
    assert m.features[0] is m.first_conv and m.head is m.classifier[6]


def test_cli_lists_every_architecture_with_parameter_counts(capsys) -> None:
    from robustlens.cli import main

    assert main(["models", "--params"]) == 0
    text = capsys.readouterr().out
    for name in available():
        assert name in text
    assert "[11.69 M params]" in text and "[36.48 M params]" in text  # resnet18 (1000 classes), wrn28_10 (10)
