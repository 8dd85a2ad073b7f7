"""ImageNet-style evaluation data: the 1000 classes, res256crop224, WordNet-id folders, the seeded limit."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from robustlens.data import load, load_splits
from robustlens.data.base import sample_indices
from robustlens.data.cache import cache_key
from robustlens.data.imagenet import imagenet_classes, imagenet_names, imagenet_wnids
from robustlens.data.readers.decode import decode_image
from robustlens.errors import UserError

IMAGENETTE = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916", "n03417042",
              "n03425413", "n03445777", "n03888605"]  # ../shared/data/README.md


def smooth(h: int, w: int, phase: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([127 + 100 * np.sin(xx / 17 + c + phase) * np.cos(yy / 23) for c in range(3)], -1).clip(0, 255).astype(np.uint8)


def imagenet_folder(root: Path, per_class: dict[str, int], split: str | None = "val") -> Path:
    base = root / split if split else root
    k = 0
    for wnid, n in per_class.items():
        (base / wnid).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(smooth(40 + 7 * k, 60 + 3 * k, k)).save(base / wnid / f"ILSVRC2012_val_{k:08d}.JPEG")
            k += 1
    return root


def test_the_1000_classes():
    classes = imagenet_classes()
    wnids = imagenet_wnids()
    assert len(classes) == 1000 and len(set(wnids)) == 1000
    assert wnids == sorted(wnids)  # the standard index order sorts the WordNet ids
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert set(IMAGENETTE) <= set(wnids)
    assert classes[0] == ("n01440764", "tench") and classes[999] == ("n15075141", "toilet_tissue")
    assert imagenet_names()[404] == "airliner" and imagenet_names().count("crane") == 2


@pytest.mark.parametrize("h, w", [(300, 451), (500, 375), (256, 256), (230, 999), (224, 300)])
def test_res256crop224_against_an_independent_computation(tmp_path, h, w):
    a = smooth(h, w)
    path = tmp_path / "x.png"
    Image.fromarray(a).save(path)
    got = decode_image(path, None, 3, "bilinear", preprocessing="res256crop224")
    assert got.shape == (224, 224, 3)
    # by hand with PIL: shorter side 256 (torchvision's int(256 * long / short)), bilinear, centre crop
    short = min(h, w)
    size = (256, int(256 * h / short)) if w <= h else (int(256 * w / short), 256)
    im = Image.fromarray(a).resize(size, Image.Resampling.BILINEAR)
    left, top = int(round((size[0] - 224) / 2)), int(round((size[1] - 224) / 2))
    by_hand = np.asarray(im.crop((left, top, left + 224, top + 224)))
    assert np.array_equal(got, by_hand)
    # and with torch's antialiased bilinear interpolation (another implementation): within one level
    x = torch.from_numpy(a).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=(size[1], size[0]), mode="bilinear", align_corners=False, antialias=True)[0]
    y = y[:, top:top + 224, left:left + 224].round().clamp(0, 255).permute(1, 2, 0).numpy()
    diff = np.abs(y - got.astype(float))
    assert diff.max() <= 1 and diff.mean() < 0.3


def test_res256crop224_then_size_resizes_the_crop(tmp_path):
    Image.fromarray(smooth(300, 400)).save(tmp_path / "x.png")
    crop = decode_image(tmp_path / "x.png", None, preprocessing="res256crop224")
    small = decode_image(tmp_path / "x.png", 32, preprocessing="res256crop224")
    want = np.asarray(Image.fromarray(crop).resize((32, 32), Image.Resampling.BILINEAR))
    assert np.array_equal(small, want)


def test_imagenet_folder_labels_are_the_1000_class_indices(tmp_path, cache_dir):
    root = imagenet_folder(tmp_path / "in", {"n01440764": 2, "n03888605": 1, "n02102040": 2})
    val = load(root, split="val", format="imagenet", preprocessing="res256crop224")
    assert val.images.shape == (5, 3, 224, 224) and val.classes == imagenet_wnids()
    wn = imagenet_wnids()
    assert val.labels.tolist() == [wn.index("n01440764")] * 2 + [wn.index("n02102040")] * 2 + [wn.index("n03888605")]
    assert load(root, split="test", format="imagenet", size=16).images.shape == (5, 3, 16, 16)  # test -> val
    # without split folders the one split is the evaluation split, val
    flat = imagenet_folder(tmp_path / "flat", {"n01440764": 1, "n02102040": 1}, split=None)
    assert list(load_splits(flat, format="imagenet", size=8)) == ["val"]
    # the folder reader of the same tree knows only the classes it sees
    assert load(root, split="val", size=8).classes == ["n01440764", "n02102040", "n03888605"]


def test_limit_decodes_a_seeded_sample_only(tmp_path, cache_dir):
    root = imagenet_folder(tmp_path / "in", {"n01440764": 4, "n02102040": 4})
    full = load(root, split="val", format="imagenet", size=8)
    broken = sorted((root / "val").rglob("*.JPEG"))
    pick = sample_indices(8, 3, 5, sort=True).tolist()
    for i in set(range(8)) - set(pick):
        broken[i].write_bytes(b"not a jpeg")  # a file outside the sample is never opened
    part = load(root, split="val", format="imagenet", size=8, limit=3, limit_seed=5)
    assert torch.equal(part.images, full.images[pick]) and torch.equal(part.labels, full.labels[pick])
    assert part.meta["images_in_folder"] == 8 and part.meta["limit"] == 3
    with pytest.raises(UserError, match="limit"):
        load(root, split="val", format="imagenet", size=8, limit={"train": 2})


def test_preprocessing_is_in_the_cache_key(tmp_path):
    root = imagenet_folder(tmp_path / "in", {"n01440764": 1})
    base = {"size": None, "channels": 3, "resample": "bilinear"}
    plain = cache_key(root, "folder", base)
    assert cache_key(root, "folder", {**base, "preprocessing": "squash"}) == plain  # earlier entries keep their key
    assert cache_key(root, "folder", {**base, "preprocessing": "res256crop224"}) != plain
    assert cache_key(root, "imagenet", {**base, "limit": 5}) != cache_key(root, "imagenet", base)


def test_preprocessing_is_cached_apart(tmp_path, cache_dir):
    root = imagenet_folder(tmp_path / "in", {"n01440764": 2})
    crop = load(root, split="val", preprocessing="res256crop224")
    squash = load(root, split="val", size=224)
    assert crop.images.shape == squash.images.shape == (2, 3, 224, 224)
    assert not torch.equal(crop.images, squash.images)
    assert torch.equal(load(root, split="val", preprocessing="res256crop224").images, crop.images)  # from the cache
    assert len(list((cache_dir / "data").iterdir())) == 2


def test_unknown_wnids_and_bad_preprocessing_are_one_line_errors(tmp_path, cache_dir):
    root = imagenet_folder(tmp_path / "in", {"n01440764": 1, "n99999999": 1, "cat": 1})
    with pytest.raises(UserError, match=r"cat/, n99999999/ not an ImageNet-1k WordNet id") as e:
        load(root, split="val", format="imagenet")
    assert "\n" not in str(e.value)
    assert not cache_dir.exists()  # nothing written
    with pytest.raises(UserError, match="unknown preprocessing 'res256'"):
        load(root, split="val", preprocessing="res256")
    with pytest.raises(UserError, match="does not apply to the procedural source"):
        load("trifeature", split="test", preprocessing="res256crop224")
    tar = tmp_path / "x.tar"
    import tarfile

    with tarfile.open(tar, "w") as t:
        t.add(root / "val", arcname="val")
    with pytest.raises(UserError, match="format 'archive' has no preprocessing choice"):
        load(tar, split="val", preprocessing="res256crop224")
    assert not cache_dir.exists()


def test_detected_only_as_a_full_wordnet_id_folder(tmp_path):
    from robustlens.data.formats import detect_format
    from robustlens.data.readers.imagenet import DETECT_MIN

    small = imagenet_folder(tmp_path / "imagenette", {w: 0 for w in IMAGENETTE})
    assert detect_format(small) == "folder"  # a 10-class subset keeps its own classes
    big = tmp_path / "ilsvrc"
    for w in imagenet_wnids()[: DETECT_MIN + 1]:
        (big / "val" / w).mkdir(parents=True)
    assert detect_format(big) == "imagenet"
    (big / "val" / "cat").mkdir()
    assert detect_format(big) == "folder"


def test_probe_cli_takes_preprocessing(tmp_path, cache_dir):
    import json

    from robustlens.cli import main
    from robustlens.models import create
    from robustlens.models.checkpoint import save_checkpoint

    root = imagenet_folder(tmp_path / "in", {"n01440764": 2, "n02102040": 1})
    ck = tmp_path / "m.safetensors"
    save_checkpoint(ck, create("small_cnn", num_classes=1000, width=4), {"classes": imagenet_wnids()})
    out = tmp_path / "out"
    assert main(["probe", "--checkpoint", str(ck), "--data", str(root), "--format", "imagenet", "--split", "val",
                 "--preprocessing", "res256crop224", "--size", "32", "--probes", "invert", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert json.loads((out / "probe.json").read_text())["data"]["images"] == 3
    with pytest.raises(SystemExit):
        main(["probe", "--checkpoint", str(ck), "--data", str(root), "--preprocessing", "crop", "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()
