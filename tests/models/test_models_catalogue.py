"""The catalogue of published models: each layout round-trips, wrong files are refused.

Fixtures are state dicts in the published layouts (RobustBench ``{"state_dict": {"module.*"}}``,
MadryLab ``{"model": {"module.model.*", "module.attacker.model.*", "module.normalizer.*"},
"epoch": ...}`` saved with ``torch.save``, torchvision bare keys) filled with random weights.
The large networks (WRN-34-10, WRN-70-16) are checked through their key tables on the
``meta`` device. The forward pass of RobustBench's Wong2020Fast variant is compared with an
independent functional implementation written from RobustBench's ``PreActBlock``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustlens.errors import UserError
from robustlens.models.catalogue import CATALOGUE, build, check_study_input, entry, fit, import_published, key_table, load_ref
from robustlens.models.checkpoint import load_checkpoint, save_checkpoint
from robustlens.models.catalogue import sidecar_meta
from robustlens.names import CATALOGUE as CATALOGUE_NAMES


def _random_state(e, seed: int = 0) -> dict[str, torch.Tensor]:
    """The entry's state dict with random weights (BN statistics positive)."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):  # shapes only: no initialisation of 25 M weights
        model = build(e)
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.zeros((), dtype=torch.long)
        elif v.is_floating_point():
            t = torch.rand(v.shape, generator=g) + 0.5 if k.endswith("running_var") else torch.randn(v.shape, generator=g) * 0.05
            out[k] = t
    return out


def _madrylab(sd: dict, mean, std) -> dict:
    """A robustness-library checkpoint around ``sd`` (DataParallel'd AttackerModel)."""
    inner = {f"module.model.{k}": v for k, v in sd.items()}
    inner.update({f"module.attacker.model.{k}": v.clone() for k, v in sd.items()})
    for pre in ("module.normalizer", "module.attacker.normalize"):
        inner[f"{pre}.new_mean"] = torch.tensor(mean)[:, None, None]
        inner[f"{pre}.new_std"] = torch.tensor(std)[:, None, None]
    return {"model": inner, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}, "schedule": None, "epoch": 90}


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    """(torch.testing.assert_close imports torch.distributed: 4 s on this machine)"""
    assert a.shape == b.shape and float((a - b).abs().max()) <= tol * (1 + float(b.abs().max())), float((a - b).abs().max())


def _logits(e, sd: dict, x: torch.Tensor) -> torch.Tensor:
    ref = build(e)
    ref.load_state_dict(sd)
    with torch.no_grad():
        return ref.eval()(x)


def test_names_module_lists_the_catalogue() -> None:
    assert tuple(CATALOGUE) == CATALOGUE_NAMES
    for e in CATALOGUE.values():
        assert e.preprocessing in ("squash", "res256crop224") and e.layouts and e.reported
        assert all(r.source for r in e.reported)


def test_issue_numbers_of_wong2020fast() -> None:
    e = entry("cifar10/Linf/Wong2020Fast")
    nums = {(r.metric, r.attack): r.accuracy for r in e.reported}
    assert nums[("clean", "")] == 83.34 and nums[("robust", "AutoAttack (standard)")] == 43.21


@pytest.mark.parametrize("name, wrap", [
    ("cifar10/Linf/Wong2020Fast", "robustbench"),
    ("cifar10/Linf/Engstrom2019Robustness", "madrylab"),
    ("cifar10/Linf/Engstrom2019Robustness", "robustbench"),
    ("imagenet/none/resnet50", "torchvision"),
    ("imagenet/Linf/Engstrom2019Robustness", "madrylab"),
])
def test_layout_round_trips(tmp_path, name: str, wrap: str) -> None:
    e = entry(name)
    sd = _random_state(e)
    if wrap == "robustbench":
        obj = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    elif wrap == "madrylab":
        obj = _madrylab(sd, e.mean, e.std)
    else:
        obj = sd
    src = tmp_path / "published.pt"
    torch.save(obj, src)
    size = e.input_size if e.input_size < 100 else 32
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    expected = _logits(e, sd, x)

    model = import_published(name, src)
    assert model.import_info["style"] == wrap
    out = tmp_path / "ours.safetensors"
    save_checkpoint(out, model, sidecar_meta(e, src, model.import_info))
    again, sc = load_checkpoint(out)
    assert sc["preprocessing"] == e.preprocessing and sc["catalogue"]["name"] == name
    assert sc["threat"] == {"norm": e.threat, "eps": e.eps}
    assert sc["normalize"]["mean"] == pytest.approx(list(e.mean))
    with torch.no_grad():
        _close(again(x), expected)
    if name == "cifar10/Linf/Wong2020Fast":  # NAME@PATH, as a study spec names it (once: it re-imports)
        ref_model, ref_sc = load_checkpoint(f"{name}@{src}")
        with torch.no_grad():
            _close(ref_model(x), expected)
        assert ref_sc["classes"] == e.class_names()


def _rb_preact18(sd: dict, x: torch.Tensor, mu, sigma) -> torch.Tensor:
    """RobustBench's Wong2020FastNet forward, written from robustbench/model_zoo/architectures/
    resnet.py (PreActBlock: shortcut of the raw input, no final BN) with torch.nn.functional."""
    def bn(t, p):
        return F.batch_norm(t, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, 1e-5)

    out = F.conv2d((x - torch.tensor(mu).view(1, 3, 1, 1)) / torch.tensor(sigma).view(1, 3, 1, 1), sd["conv1.weight"], padding=1)
    for layer, stride in ((1, 1), (2, 2), (3, 2), (4, 2)):
        for b in (0, 1):
            p, s = f"layer{layer}.{b}", stride if b == 0 else 1
            a = F.relu(bn(out, f"{p}.bn1"))
            short = F.conv2d(out, sd[f"{p}.shortcut.0.weight"], stride=s) if f"{p}.shortcut.0.weight" in sd else out
            h = F.conv2d(a, sd[f"{p}.conv1.weight"], stride=s, padding=1)
            h = F.conv2d(F.relu(bn(h, f"{p}.bn2")), sd[f"{p}.conv2.weight"], padding=1)
            out = h + short
    out = F.avg_pool2d(out, 4).flatten(1)
    return F.linear(out, sd["linear.weight"], sd["linear.bias"])


def test_wong2020fast_forward_matches_robustbench_definition(tmp_path) -> None:
    e = entry("cifar10/Linf/Wong2020Fast")
    sd = _random_state(e, seed=3)
    src = tmp_path / "Wong2020Fast.pt"
    torch.save(sd, src)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = import_published(e.name, src)(x)
        theirs = _rb_preact18(sd, x, e.mean, e.std)
    _close(ours, theirs, 1e-4)
    assert not any(k.startswith("bn.") for k in sd)  # RobustBench's variant has no final BN


def _wrn_table(depth: int, k: int, sub_block1: bool = False) -> list[tuple[str, tuple]]:
    """RobustBench / TRADES WideResNet keys, written from architectures/wide_resnet.py."""
    def bn(p, c):
        return [(f"{p}.weight", (c,)), (f"{p}.bias", (c,)), (f"{p}.running_mean", (c,)), (f"{p}.running_var", (c,)), (f"{p}.num_batches_tracked", ())]

    n, ch = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
    rows = [("conv1.weight", (16, 3, 3, 3))]
    blocks = [("block1", ch[0], ch[1])] + ([("sub_block1", ch[0], ch[1])] if sub_block1 else []) + [("block2", ch[1], ch[2]), ("block3", ch[2], ch[3])]
    for name, cin, cout in blocks:
        for i in range(n):
            c = cin if i == 0 else cout
            p = f"{name}.layer.{i}"
            rows += bn(f"{p}.bn1", c) + [(f"{p}.conv1.weight", (cout, c, 3, 3))] + bn(f"{p}.bn2", cout) + [(f"{p}.conv2.weight", (cout, cout, 3, 3))]
            if c != cout:
                rows.append((f"{p}.convShortcut.weight", (cout, c, 1, 1)))
    return rows + bn("bn1", ch[3]) + [("fc.weight", (10, ch[3])), ("fc.bias", (10,))]


@pytest.mark.parametrize("name, depth, k", [("cifar10/Linf/Standard", 28, 10), ("cifar10/Linf/Zhang2019Theoretically", 34, 10),
                                            ("cifar10/Linf/Jia2022LAS-AT_70_16", 70, 16)])
def test_wide_resnet_key_tables(name: str, depth: int, k: int) -> None:
    assert list(key_table(entry(name)).items()) == _wrn_table(depth, k)


def test_wrn70_16_parameter_count() -> None:
    table = key_table(entry("cifar10/Linf/Jia2022LAS-AT_70_16"))
    n = sum(torch.Size(s).numel() for k, s in table.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert n == 266_796_506  # about 267 M: 1.07 GB in float32, which is why this test stays on meta


def test_trades_file_with_sub_block1_fits_on_meta() -> None:
    """Zhang2019Theoretically's file (WRN-34-10, ``sub_block1=True``, ``module.``-prefixed, under
    "state_dict"): the unused sub_block1 keys are dropped, every other key fits."""
    e = entry("cifar10/Linf/Zhang2019Theoretically")
    raw = {f"module.{k}": torch.empty(s, device="meta") for k, s in _wrn_table(34, 10, sub_block1=True)}
    sd, stats, dropped, layout, d = fit(e, raw)
    assert d.ok and layout == "robustbench" and stats is None
    assert dropped and all(k.startswith("sub_block1.") for k in dropped) and len(dropped) == 5 * (5 * 2 + 2) + 1


def test_wrong_entry_is_refused_with_keys_and_closest(tmp_path) -> None:
    e = entry("cifar10/Linf/Wong2020Fast")
    src = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _random_state(e).items()}}, src)
    with pytest.raises(UserError) as err:
        import_published("cifar10/Linf/Engstrom2019Robustness", src)
    msg = str(err.value)
    assert "\n" not in msg and "missing keys" in msg and "shape mismatches" in msg and "bn1.weight" in msg
    assert "closest entries: cifar10/Linf/Wong2020Fast (100% of keys)" in msg


def test_file_matching_no_entry_shows_closest(tmp_path) -> None:
    sd = _random_state(entry("cifar10/Linf/Wong2020Fast"))
    sd["extra_head.weight"] = torch.zeros(3, 3)
    del sd["linear.bias"]
    src = tmp_path / "odd.pt"
    torch.save(sd, src)
    with pytest.raises(UserError, match=r"1 missing keys \(linear.bias\); 1 unexpected keys \(extra_head.weight\); closest entries: cifar10/Linf/Wong2020Fast \(9\d% of keys\)"):
        import_published("cifar10/Linf/Wong2020Fast", src)


def test_madrylab_normaliser_of_another_dataset_is_refused(tmp_path) -> None:
    e = entry("imagenet/Linf/Engstrom2019Robustness")
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build(e).state_dict().items()}
    sd = {k: torch.zeros(s) if k != "bn1.num_batches_tracked" else torch.zeros((), dtype=torch.long) for k, s in shapes.items()}
    src = tmp_path / "m.pt"
    torch.save(_madrylab(sd, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)), src)  # CIFAR statistics
    with pytest.raises(UserError, match="file's normalisation .* is not imagenet/Linf/Engstrom2019Robustness's"):
        import_published(e.name, src)


def test_wrong_preprocessing_is_refused() -> None:
    with pytest.raises(UserError, match=r'expects data.preprocessing = "res256crop224".*is "squash"'):
        check_study_input(entry("imagenet/none/resnet50"), "squash", 224, "spec: models.std.checkpoint")
    with pytest.raises(UserError, match="takes 32x32 images, but data.size = 64"):
        check_study_input(entry("cifar10/Linf/Wong2020Fast"), "squash", 64, "spec: models.adv.checkpoint")
    check_study_input(entry("cifar10/Linf/Wong2020Fast"), "squash", 32, "spec")


def test_study_spec_checks_a_published_checkpoint(tmp_path) -> None:
    from robustlens.study.spec import parse_spec
    from robustlens.study.stages.train import check_published

    src = tmp_path / "rn50.pth"
    src.write_bytes(b"not read by the check")
    text = f'name = "t"\n[data]\npreprocessing = "squash"\nsize = 224\n[models.std]\ncheckpoint = "imagenet/none/resnet50@{src}"\n'
    spec = parse_spec(text, str(tmp_path / "s.toml"), tmp_path)
    assert spec.models["std"].checkpoint == f"imagenet/none/resnet50@{src}"
    with pytest.raises(UserError, match=r"models.std.checkpoint: imagenet/none/resnet50 expects data.preprocessing"):
        check_published(spec, "std", [f"c{i}" for i in range(1000)], "s.toml")
    with pytest.raises(UserError, match="unknown catalogue entry 'imagenet/none/resnet5'"):
        parse_spec(text.replace("resnet50@", "resnet5@"), str(tmp_path / "s.toml"), tmp_path)


def test_cli_import_writes_nothing_on_a_wrong_entry(tmp_path, capsys) -> None:
    from robustlens.cli import main

    e = entry("cifar10/Linf/Wong2020Fast")
    src = tmp_path / "w.pt"
    torch.save(_random_state(e), src)
    out = tmp_path / "out.safetensors"
    assert main(["models", "--import", "cifar10/Linf/Standard", "--file", str(src), "--out", str(out)]) != 0
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert main(["models", "--import", e.name, "--file", str(src), "--out", str(out)]) == 0
    model, sc = load_checkpoint(out)
    assert sc["classes"][1] == "automobile" and sc["model_kwargs"]["final_bn"] is False
    assert main(["models", "--catalogue"]) == 0
    assert "cifar10/Linf/Wong2020Fast" in capsys.readouterr().out


def test_load_ref_unknown_entry_is_one_line(tmp_path) -> None:
    with pytest.raises(UserError, match="did you mean 'cifar10/Linf/Wong2020Fast'"):
        load_ref(f"cifar10/Linf/Wong2020Fas@{tmp_path / 'x.pt'}")
