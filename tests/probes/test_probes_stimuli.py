"""Geirhos stimulus sets from disk, the 16-class aggregation and shape bias (model-vs-human)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from robustlens.data.imagenet import imagenet16_categories, imagenet_wnids
from robustlens.data.stimuli import read_stimuli, scan_stimuli
from robustlens.errors import UserError
from robustlens.probes.stimuli import class_map, evaluate_stimuli, imagenet16_map, measure, table_map

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_MAP = {"airplane": "airplane", "car": "automobile", "bird": "bird", "cat": "cat", "dog": "dog",
             "boat": "ship", "truck": "truck"}


class Decoder(nn.Module):
    """A fake CIFAR-10 model: an image filled with grey level 20 * (k + 1) gets a confident
    logit on class k (so each fixture image says what the model decides)."""

    def __init__(self, n: int = 10) -> None:
        super().__init__()
        self.n = n
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = (x.mean((1, 2, 3)) * 255 / 20).round().long() - 1
        return torch.nn.functional.one_hot(k.clamp(0, self.n - 1), self.n).float() * 10 + self.dummy


def _png(path: Path, level: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), level, np.uint8)).save(path)


# (file, the CIFAR class the fake model decides): shape / texture from the name
CUE = [
    ("airplane/airplane1-car1.png", "airplane"),  # shape hit
    ("airplane/airplane1-cat2.png", "cat"),       # texture hit
    ("airplane/airplane2-airplane1.png", "airplane"),  # shape = texture: dropped from the bias
    ("car/car1-dog1.png", "dog"),                 # texture hit
    ("car/car2-airplane1.png", "automobile"),     # shape hit
    ("cat/cat1-boat1.png", "frog"),               # neither (frog is outside the map)
    ("cat/cat1-car2.png", "automobile"),          # texture hit
    ("dog/dog1-cat1.png", "dog"),                 # shape hit
    ("boat/boat1-bear1.png", "ship"),             # dropped: bear is not in the map
    ("bear/bear1-cat1.png", "cat"),               # dropped: bear is not in the map
]


def cue_folder(root: Path) -> Path:
    for rel, decided in CUE:
        _png(root / rel, 20 * (CIFAR.index(decided) + 1))
    return root


def test_shape_bias_equals_a_hand_count(tmp_path):
    stimuli = read_stimuli(cue_folder(tmp_path / "cue"), "cue_conflict")
    assert stimuli.classes == ["airplane", "bear", "boat", "car", "cat", "dog"]
    cmap = table_map(CIFAR_MAP, CIFAR)
    out = measure(Decoder(), stimuli, cmap, batch_size=3)
    # by hand: 2 images with bear dropped; of the 8 left, 1 has shape = texture; of the 7 in
    # conflict, shape hits airplane1-car1, car2-airplane1, dog1-cat1 = 3; texture hits
    # airplane1-cat2, car1-dog1, cat1-car2 = 3; cat1-boat1 (frog) is neither
    assert (out["n"], out["dropped"], out["n_shape_texture"]) == (8, 2, 7)
    assert (out["shape_hits"], out["texture_hits"]) == (3, 3)
    assert out["shape_bias"] == pytest.approx(3 / 6)


def test_silhouette_accuracy_and_dropped(tmp_path):
    for rel, decided in [("cat/cat1.png", "cat"), ("cat/cat2.png", "dog"), ("boat/boat1.png", "ship"),
                         ("bear/bear1.png", "cat")]:
        _png(tmp_path / "sil" / rel, 20 * (CIFAR.index(decided) + 1))
    sets = {"silhouettes": read_stimuli(tmp_path / "sil", "silhouettes")}
    out = evaluate_stimuli({"m": Decoder()}, sets, table_map(CIFAR_MAP, CIFAR))["m"]["silhouettes"]
    assert (out["n"], out["dropped"], out["hits"]) == (3, 1, 2)
    assert out["accuracy"] == pytest.approx(2 / 3)


def _model_vs_human_decision(probabilities: np.ndarray) -> str:
    """model-vs-human's ImageNetProbabilitiesTo16ClassesMapping, loop for loop: the category
    with the largest np.mean over np.take(probabilities, indices)."""
    best, decision = -float("inf"), None
    for category, indices in sorted(imagenet16_categories().items()):
        value = np.mean(np.take(probabilities, list(indices)))
        if value > best:
            best, decision = value, category
    return decision


def test_16_class_aggregation_matches_a_hand_computed_example():
    cats = imagenet16_categories()
    assert len(cats) == 16 and list(cats) == sorted(cats)
    # weights w (probability = w / sum w): 1 everywhere, 50 on one dog class, 20 on the six
    # cat classes. The arg-max over 1000 classes is the dog class, but the category means are
    # cat 20/S against dog (50 + 108)/109/S: the decision is cat.
    w = np.ones(1000)
    w[cats["dog"][0]] = 50.0
    w[list(cats["cat"])] = 20.0
    S = w.sum()
    assert S == 1000 - 1 - 6 + 50 + 120
    logits = torch.tensor(np.log(w), dtype=torch.float32)[None]
    cmap = imagenet16_map(imagenet_wnids())
    agg = cmap.aggregate(logits)[0].double()
    k = {c: i for i, c in enumerate(cmap.categories)}
    assert len(cats["dog"]) == 109  # 152..268 less 192, 204, 227, 242, 251, 258, 260, 264
    assert agg[k["cat"]].item() == pytest.approx(20 / S, rel=1e-5)
    assert agg[k["dog"]].item() == pytest.approx((50 + 108) / 109 / S, rel=1e-5)
    assert agg[k["knife"]].item() == pytest.approx(1 / S, rel=1e-5)
    assert cmap.categories[int(cmap.decide(logits)[0])] == "cat" == _model_vs_human_decision(w / S)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # random logits: the same decision as model-vs-human's loop
        z = torch.randn(1, 1000, generator=g) * 3
        p = torch.softmax(z.double(), 1)[0].numpy()
        assert cmap.categories[int(cmap.decide(z)[0])] == _model_vs_human_decision(p)


def test_16_class_indices_are_the_wnids_of_human_categories():
    """The stored indices name the WordNet ids of model-vs-human's HumanCategories lists (an
    independent check of the index <-> wnid table, for the categories with short lists)."""
    wnids = imagenet_wnids()
    human = {"airplane": {"n02690373", "n03955296", "n13861050", "n13941806"}, "knife": {"n03041632"},
             "oven": {"n03259401", "n04111414", "n04111531"}, "keyboard": {"n03085013", "n04505470"},
             "elephant": {"n02504013", "n02504458"}, "bicycle": {"n02835271", "n03792782"},
             "bear": {"n02132136", "n02133161", "n02134084", "n02134418"},
             "car": {"n02814533", "n03100240", "n03100346", "n13419325", "n04285008"},
             "clock": {"n02708093", "n03196217", "n04548280"}}
    cats = imagenet16_categories()
    for c, members in human.items():
        assert {wnids[i] for i in cats[c]} <= members, c


def test_bad_class_maps_are_one_line_errors():
    with pytest.raises(UserError, match=r"class_map\.boat: the model has no class 'boat_x'") as e:
        table_map({"airplane": "airplane", "boat": "boat_x"}, CIFAR)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="needs a model over the 1000 ImageNet-1k classes"):
        class_map("imagenet16", CIFAR)
    with pytest.raises(UserError, match="unknown class map 'imagenet1000'"):
        class_map("imagenet1000", CIFAR)


@pytest.mark.parametrize("rel, kind", [
    ("train/airplane/x.png", "cue_conflict"),         # another layout: a split folder
    ("airplane/airplane1.png", "cue_conflict"),       # a silhouette name in a cue-conflict set
    ("airplane/bear1-cat1.png", "cue_conflict"),      # shape class is not the folder
    ("airplane/airplane1-bear1.png", "silhouettes"),  # a cue-conflict name in a silhouette set
    ("airplane1.png", "edges"),                       # an image outside the class folders
])
def test_stimuli_in_another_layout_name_the_first_file(tmp_path, rel, kind):
    _png(tmp_path / "s" / "airplane" / ("airplane1-bear2.png" if kind == "cue_conflict" else "airplane2.png"), 20)
    _png(tmp_path / "s" / rel, 20)
    (tmp_path / "s" / "README.txt").write_text("ignored")
    with pytest.raises(UserError, match="does not parse") as e:
        scan_stimuli(tmp_path / "s", kind)
    assert str(tmp_path / "s" / rel) in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in (tmp_path / "s").rglob("*") if p.is_file()) == sorted(
        ["README.txt", Path(rel).name, "airplane1-bear2.png" if kind == "cue_conflict" else "airplane2.png"])


def test_probe_cli_stimuli(tmp_path, checkpoints, capsys):
    """``robustlens probe --stimuli``: the models answer in the shape classes of --data."""
    import json

    from robustlens.cli import main

    cue_folder(tmp_path / "cue")
    args = ["probe", "--checkpoint", checkpoints[0], "--data", "trifeature:size=16,n_train=0,n_test=8,n_conflict=8",
            "--probes", "invert", "--stimuli", f"cue_conflict={tmp_path / 'cue'}", "--device", "cpu",
            "--class-map", "airplane=circle,car=triangle+square,cat=star,dog=heart"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out" / "stimuli.json").read_text())
    assert [(r["set"], r["n"], r["dropped"]) for r in rows] == [("cue_conflict", 7, 3)]  # cat1-boat1, boat1-bear1, bear1-cat1 unmapped
    assert "on cue_conflict (7 images, 3 outside the class map)" in capsys.readouterr().out
    bad = [*args[:-1], "airplane=circle,car=automobile", "--out", str(tmp_path / "bad")]
    assert main(bad) != 0
    assert "--class-map.car: the model has no class 'automobile'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # nothing written
