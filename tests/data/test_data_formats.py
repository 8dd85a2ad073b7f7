"""On-disk readers: tiny fixtures in each exact format, read back pixel-exact; bad inputs."""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from helpers_data import (
    tar_folder,
    write_cifar10,
    write_cifar100,
    write_idx,
    write_image_folder,
    write_stl10,
    write_svhn,
    write_tiny_imagenet,
)
from robustlens.data import load, load_splits
from robustlens.data.formats import FORMATS, detect_format, resize_uint8
from robustlens.errors import UserError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLENS_CACHE", str(tmp_path / "cache"))


def nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def test_cifar10(tmp_path):
    ref = write_cifar10(tmp_path / "cifar-10-batches-py")
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):  # the folder or its parent
        assert detect_format(root) == "cifar"
        s = load_splits(root)
        assert set(s) == {"train", "test"}
        for split in ("train", "test"):
            assert torch.equal(s[split].images, torch.from_numpy(ref[split][0]))
            assert s[split].labels.tolist() == ref[split][1].tolist()
            assert s[split].classes == ref["classes"]
    assert len(s["train"]) == 30 and len(s["test"]) == 6
    small = load(tmp_path, split="test", size=16)
    assert small.images.shape == (6, 3, 16, 16)
    # antialiased interpolation matches PIL's bilinear resize (an independent implementation)
    pil = np.stack([np.asarray(Image.fromarray(img.transpose(1, 2, 0)).resize((16, 16), Image.BILINEAR))
                    for img in ref["test"][0]]).transpose(0, 3, 1, 2)
    assert (small.images.float() - torch.from_numpy(pil.copy()).float()).abs().max() <= 1


def test_cifar100_fine_and_coarse(tmp_path):
    ref = write_cifar100(tmp_path / "cifar-100-python")
    fine = load_splits(tmp_path)
    assert fine["train"].num_classes == 100 and fine["train"].classes[3] == "fine3"
    assert torch.equal(fine["test"].images, torch.from_numpy(ref["test"][0]))
    assert fine["test"].labels.tolist() == ref["test"][1].tolist()
    coarse = load(tmp_path, split="train", label="coarse")
    assert coarse.num_classes == 20 and coarse.labels.tolist() == ref["train"][2].tolist()


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar10(tmp_path)
    with open(tmp_path / "data_batch_1", "wb") as fh:
        pickle.dump({"data": _Evil(), "labels": []}, fh, protocol=2)
    with pytest.raises(UserError, match=r"data_batch_1.*not allowed"):
        load(tmp_path)


def test_cifar_labels_beyond_classes(tmp_path):
    write_cifar10(tmp_path)
    with open(tmp_path / "test_batch", "wb") as fh:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 12]}, fh, protocol=2)
    with pytest.raises(UserError, match="labels span 0..12 but there are 10 classes"):
        load(tmp_path, split="test")


@pytest.mark.parametrize("gz", [False, True])
def test_idx(tmp_path, gz):
    ref = write_idx(tmp_path / "mnist", gz=gz)
    assert detect_format(tmp_path / "mnist") == "idx"
    s = load_splits(tmp_path / "mnist")
    assert s["train"].images.shape == (7, 1, 28, 28)
    assert torch.equal(s["train"].images[:, 0], torch.from_numpy(ref["train"][0]))
    assert s["test"].labels.tolist() == ref["test"][1].tolist()
    assert s["train"].classes == [str(i) for i in range(10)]
    rgb = load(tmp_path / "mnist", split="test", channels=3)
    assert rgb.images.shape == (7, 3, 28, 28) and torch.equal(rgb.images[:, 1], rgb.images[:, 0])
    # pointing at one of the files works too
    name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
    assert torch.equal(load(tmp_path / "mnist" / name, split="test").images, s["test"].images)


def test_fashion_mnist_class_names_and_bad_idx(tmp_path):
    write_idx(tmp_path / "fashion-mnist")
    s = load(tmp_path / "fashion-mnist", split="train")
    assert s.classes[0] == "T-shirt/top" and s.classes[9] == "Ankle boot"
    bad = tmp_path / "bad"
    write_idx(bad)
    raw = (bad / "train-labels-idx1-ubyte").read_bytes()
    (bad / "train-labels-idx1-ubyte").write_bytes(raw[:-2])  # truncated
    with pytest.raises(UserError, match="train-labels-idx1-ubyte.*holds"):
        load(bad)


def test_svhn(tmp_path):
    ref = write_svhn(tmp_path)
    assert detect_format(tmp_path) == "svhn"
    s = load_splits(tmp_path)
    X, y = ref["train"]
    assert torch.equal(s["train"].images, torch.from_numpy(X.transpose(3, 2, 0, 1).copy()))
    expected = np.where(y[:, 0] == 10, 0, y[:, 0])
    assert s["train"].labels.tolist() == expected.tolist() and s["train"].labels[0] == 0
    one = load(tmp_path / "test_32x32.mat", split="test")
    assert torch.equal(one.images, s["test"].images)


def test_stl10(tmp_path):
    ref = write_stl10(tmp_path)
    assert detect_format(tmp_path) == "stl10"
    s = load_splits(tmp_path)
    assert torch.equal(s["train"].images, torch.from_numpy(ref["train"][0]))
    assert s["test"].labels.tolist() == (ref["test"][1].astype(int) - 1).tolist()
    assert s["train"].classes[7] == "monkey"


def test_tiny_imagenet_with_boxes(tmp_path):
    ref = write_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    assert detect_format(tmp_path) == "tinyimagenet"
    s = load_splits(tmp_path, cache=False)
    assert s["train"].classes == ["n01", "n02", "n03"]
    assert torch.equal(s["train"].images, nchw(np.stack([a for a, _, _ in ref["train"]])))
    assert s["train"].labels.tolist() == [k for _, k, _ in ref["train"]]
    assert s["val"].labels.tolist() == [k for _, k, _ in ref["val"]]
    exp = torch.tensor([b for _, _, b in ref["val"]], dtype=torch.float32)
    exp[:, 2:] += 1  # inclusive corners in the file
    assert torch.equal(s["val"].boxes, exp)
    half = load(tmp_path, split="val", size=32, cache=False)
    assert half.images.shape == (4, 3, 32, 32) and torch.allclose(half.boxes, exp / 2)


@pytest.mark.parametrize("splits", [None, ["train", "test"]])
def test_png_folder_exact(tmp_path, splits):
    ref = write_image_folder(tmp_path / "data", splits=splits)
    s = load_splits(tmp_path / "data", cache=False, num_workers=1)
    assert set(s) == set(ref)
    for split, rows in ref.items():
        assert s[split].classes == ["cat", "dog"]
        assert torch.equal(s[split].images, nchw(np.stack([a for _, a, _ in rows])))
        assert s[split].labels.tolist() == [k for _, _, k in rows]
    if splits is None:  # one split: "train", also reachable as "all"
        assert torch.equal(load(tmp_path / "data", split="all", cache=False).images, s["train"].images)


def test_jpeg_folder_matches_pil_and_resize(tmp_path):
    ref = write_image_folder(tmp_path / "d", ext="jpg", size=(20, 20))
    s = load(tmp_path / "d", cache=False, num_workers=2)
    for (rel, _, _), img in zip(ref["train"], s.images):
        expected = np.array(Image.open(tmp_path / "d" / rel).convert("RGB"))
        assert torch.equal(img, torch.from_numpy(expected).permute(2, 0, 1))
    r = load(tmp_path / "d", size=8, resample="bicubic", cache=False)
    expected = np.array(Image.open(tmp_path / "d" / ref["train"][0][0]).convert("RGB").resize((8, 8), Image.BICUBIC))
    assert torch.equal(r.images[0], torch.from_numpy(expected).permute(2, 0, 1))
    grey = load(tmp_path / "d", channels=1, cache=False)
    assert grey.channels == 1


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz"])
def test_archive_equals_folder(tmp_path, suffix):
    write_image_folder(tmp_path / "myset", splits=["train", "val"])
    folder = load_splits(tmp_path / "myset", cache=False)
    archive = tar_folder(tmp_path / "myset", tmp_path / f"myset{suffix}")
    assert detect_format(archive) == "archive"
    got = load_splits(archive, cache=False, num_workers=1)
    assert set(got) == {"train", "val"}
    for split in got:
        assert torch.equal(got[split].images, folder[split].images)
        assert torch.equal(got[split].labels, folder[split].labels)
        assert got[split].classes == folder[split].classes


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_index_matches_tarfile(tmp_path, fmt):
    from robustlens.data.formats import tar_index

    long_dir = "d" * 60 + "/" + "e" * 60
    files = {"a/x.png": b"12345", f"{long_dir}/y.png": b"abc" * 300, "a/empty.png": b""}
    if fmt != tarfile.USTAR_FORMAT:
        files["f" * 130 + ".png"] = b"long"  # a name beyond ustar's 100 + 155 split
    arc = tmp_path / "t.tar"
    with tarfile.open(arc, "w", format=fmt) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    buf = arc.read_bytes()
    got = {name: buf[a:b] for name, a, b in tar_index(buf)}
    assert got == files
    with pytest.raises(ValueError):
        tar_index(b"x" * 1024)


def test_archive_streaming_fallback_equals_fast_path(tmp_path, monkeypatch):
    from robustlens.data.readers import archive

    write_image_folder(tmp_path / "s", splits=["train", "test"])
    arc = tar_folder(tmp_path / "s", tmp_path / "s.tar.gz")
    fast = load_splits(arc, cache=False, num_workers=2)

    def unusual(stream):  # what the direct parse says of an archive it does not know: tarfile reads it
        raise ValueError("sparse member")
        yield

    monkeypatch.setattr(archive, "_tar_walk", unusual)
    slow = load_splits(arc, cache=False, num_workers=2)
    for split in fast:
        assert torch.equal(fast[split].images, slow[split].images)
        assert torch.equal(fast[split].labels, slow[split].labels)


def test_archive_corrupt_member_is_named(tmp_path):
    write_image_folder(tmp_path / "s")
    (tmp_path / "s" / "dog" / "1.png").write_bytes(b"not a png at all")
    arc = tar_folder(tmp_path / "s", tmp_path / "s.tar.gz")
    with pytest.raises(UserError, match=r"s\.tar\.gz:s/dog/1\.png: cannot decode image"):
        load(arc, cache=False, num_workers=1)
    with pytest.raises(UserError, match=r"dog/1\.png: cannot decode image"):
        load(tmp_path / "s", cache=False, num_workers=2)
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UserError, match="junk.tar.gz: not a readable tar archive"):
        load(tmp_path / "junk.tar.gz", cache=False)


def test_test_split_falls_back_to_val(tmp_path):
    # ImageNet / Imagenette layout: train + val; "test" asks for the held-out split
    rows = write_image_folder(tmp_path / "inet", splits=["train", "val"], per_class=2)
    val = load(tmp_path / "inet", split="test", cache=False)
    assert val.name.endswith("/val") and len(val) == len(rows["val"])
    assert np.array_equal(val.images[0].permute(1, 2, 0).numpy(), rows["val"][0][1])
    # a real test split is never replaced
    write_image_folder(tmp_path / "both", splits=["train", "val", "test"], per_class=1)
    assert load(tmp_path / "both", split="test", cache=False).name.endswith("/test")


def test_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="nowhere: no such file"):
        load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: no images"):
        load(tmp_path / "empty", cache=False)
    write_image_folder(tmp_path / "d")
    with pytest.raises(UserError, match="format='pngs': unknown; valid formats: " + ", ".join(FORMATS)):
        load(tmp_path / "d", format="pngs")
    with pytest.raises(UserError, match="size"):
        load(tmp_path / "d", size=0)
    with pytest.raises(UserError, match="size"):
        load(tmp_path / "d", size="ten")
    with pytest.raises(UserError, match="unknown option"):
        load(tmp_path / "d", colour=3)
    with pytest.raises(UserError, match="no split 'test'; it has train"):
        load(tmp_path / "d", split="test", cache=False)
    with pytest.raises(UserError, match="no CIFAR batches"):
        load(tmp_path / "d", format="cifar")
    (tmp_path / "loose").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "loose" / "a.png")
    with pytest.raises(UserError, match="not inside a class folder"):
        load(tmp_path / "loose", cache=False)
    (tmp_path / "mixed" / "a").mkdir(parents=True)
    (tmp_path / "mixed" / "b").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "mixed" / "a" / "x.png")
    Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(tmp_path / "mixed" / "b" / "y.png")
    with pytest.raises(UserError, match="different sizes.*pass --size N"):
        load(tmp_path / "mixed", cache=False, num_workers=1)
    assert load(tmp_path / "mixed", size=6, cache=False).images.shape == (2, 3, 6, 6)
    (tmp_path / "x.weird").write_bytes(b"?")
    with pytest.raises(UserError, match="cannot tell the format"):
        load(tmp_path / "x.weird")


def test_resize_uint8_identity_and_nearest():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert resize_uint8(x, 8) is x
    up = resize_uint8(x, 16, "nearest")
    assert torch.equal(up[:, :, ::2, ::2], x)


def test_file_loader_yields_tensor_loader_batches(tmp_path):
    from robustlens.data.formats import scan_folder
    from robustlens.data.loader import FileLoader, TensorLoader

    write_image_folder(tmp_path / "d", per_class=5)
    files, classes, splits = scan_folder(tmp_path / "d")
    s = load(tmp_path / "d", cache=False)
    items = splits["train"]
    fl = FileLoader([files[i] for i, _ in items], [k for _, k in items], classes, batch_size=4, seed=2,
                    augment=True, num_workers=1)
    tl = TensorLoader(s, batch_size=4, seed=2, augment=True)
    assert len(fl) == len(tl) == 3
    got, ref = list(fl.epoch(1, start=1)), list(tl.epoch(1, start=1))
    assert len(got) == 2
    for (xa, ya), (xb, yb) in zip(got, ref):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    same = FileLoader.from_folder(tmp_path / "d", batch_size=4, seed=2, augment=True, num_workers=0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(same.epoch(1), tl.epoch(1)))


def test_sample_of_a_class_sorted_folder_is_fair_and_so_is_its_prefix(tmp_path):
    """Folders are read class by class; a seeded sample (and any prefix of it) mixes classes,
    is reproducible, never repeats an image, and covers the whole split when n >= len."""
    classes = tuple(f"c{i}" for i in range(5))
    write_image_folder(tmp_path / "d", classes=classes, per_class=20, splits=["test"])
    test = load_splits(str(tmp_path / "d"))["test"]
    assert test.labels[:20].tolist() == [0] * 20  # sorted by class, so head() is one class
    s = test.sample(40, seed=3)
    assert len(s) == 40 and len(set(s.labels[:10].tolist())) >= 3
    again = test.sample(40, seed=3)
    assert torch.equal(s.labels, again.labels) and torch.equal(s.images, again.images)
    whole = test.sample(10_000, seed=1)
    assert len(whole) == len(test) and sorted(whole.labels.tolist()) == sorted(test.labels.tolist())
    assert len(set(whole.labels[:15].tolist())) >= 3
    rows = {bytes(img.numpy().tobytes()) for img in whole.images}
    assert len(rows) == len(test)  # a permutation: no image twice
