"""Issue 16, the data side: archive limits, one layout per tree, 16-bit images, stale or damaged
cache entries, symbolic links, class sets per split, and the size / format messages.

Each test here failed on the code before its fix (see the issue's closing note for how).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers_data import add_tar_member, png16_bytes, tar_folder, write_image_folder
from robustlens.data import load, load_splits
from robustlens.data.readers import archive
from robustlens.data.readers.walk import DataWarning
from robustlens.errors import UserError


def _loads_quietly(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning expected
        return load_splits(path, **kw)


# ------------------------------------------------------------------ 5: decompression bombs
def test_archive_zero_member_is_streamed_not_held(tmp_path):
    """A 64 MiB member of zeros (a 64 KiB .tar.gz) is skipped as it streams: the load holds far
    less than the member (before: the whole archive was inflated in memory)."""
    write_image_folder(tmp_path / "s", splits=["train", "test"])
    arc = add_tar_member(tar_folder(tmp_path / "s", tmp_path / "s.tar.gz"), "s/zeros.bin", size=64 << 20)
    assert arc.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        got = load_splits(arc, cache=False, num_workers=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(got["train"]) == 6 and peak < 16 << 20, peak


def test_archive_limits_are_stated(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "s")
    arc = tar_folder(tmp_path / "s", tmp_path / "s.tar.gz")
    add_tar_member(arc, "s/cat/big.png", size=2 << 20)
    monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 1 << 20)
    with pytest.raises(UserError, match=r"member s/cat/big\.png is 2\.0 MiB, more than the 1\.0 MiB .*MAX_MEMBER_BYTES"):
        load(arc, cache=False, num_workers=1)
    monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 256 << 20)
    monkeypatch.setattr(archive, "MAX_ARCHIVE_BYTES", 1 << 20)
    with pytest.raises(UserError, match=r"s\.tar\.gz: decompresses to more than 1\.0 MiB.*MAX_ARCHIVE_BYTES.*extract it"):
        load(arc, cache=False, num_workers=1)
    monkeypatch.setattr(archive, "MAX_ARCHIVE_BYTES", 16 << 30)
    monkeypatch.setattr(archive, "MAX_HEADER_BYTES", 1024)
    long_name = tmp_path / "long.tar"
    with tarfile.open(long_name, "w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("s/cat/" + "n" * 2000 + ".png")
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(UserError, match=r"long\.tar: a 2011-byte 'L' header .*MAX_HEADER_BYTES"):
        load(long_name, cache=False, num_workers=1)


# ------------------------------------------------------------------ 6: one layout per tree
def test_stray_folder_beside_splits_is_named(tmp_path):
    write_image_folder(tmp_path / "d", splits=["train", "test"])
    (tmp_path / "d" / "previews").mkdir()
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(tmp_path / "d" / "previews" / "p.png")
    with pytest.raises(UserError, match=r"previews/ \(holding previews/p\.png\) is beside the split folders test/, train/"):
        load_splits(tmp_path / "d", cache=False, num_workers=1)
    arc = tar_folder(tmp_path / "d", tmp_path / "d.tar.gz")
    with pytest.raises(UserError, match=r"previews/ .* is beside the split folders"):
        load_splits(arc, cache=False, num_workers=1)


def test_stray_image_in_a_split_folder_is_named(tmp_path):
    write_image_folder(tmp_path / "d", splits=["train", "test"])
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(tmp_path / "d" / "train" / "x.png")
    with pytest.raises(UserError, match=r"image train/x\.png lies directly in the split folder train/"):
        load_splits(tmp_path / "d", cache=False, num_workers=1)


def test_dotdot_member_is_refused(tmp_path):
    write_image_folder(tmp_path / "s", splits=["train", "test"])
    png = io.BytesIO()
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(png, format="PNG")
    arc = add_tar_member(tar_folder(tmp_path / "s", tmp_path / "s.tar.gz"), "../../x.png", data=png.getvalue())
    with pytest.raises(UserError, match=r"\.\./\.\./x\.png: an absolute path or one with '\.\.'"):
        load_splits(arc, cache=False, num_workers=1)


def test_mixed_depths_in_class_layout_are_named(tmp_path):
    write_image_folder(tmp_path / "d")
    write_image_folder(tmp_path / "d" / "dog" / "more", classes=("x",), per_class=1)
    with pytest.raises(UserError, match=r"images at different depths \(cat/0\.png and dog/more/x/0\.png\)"):
        load(tmp_path / "d", cache=False, num_workers=1)


def test_uniform_layouts_still_load(tmp_path):
    """What was valid keeps its meaning: nested class folders of one depth, a class called
    ``train`` holding images directly, and splits sorted by class name."""
    write_image_folder(tmp_path / "nested" / "a", classes=("x",), per_class=2)
    write_image_folder(tmp_path / "nested" / "b", classes=("y",), per_class=2)
    s = _loads_quietly(tmp_path / "nested", cache=False, num_workers=1)["train"]
    assert s.classes == ["a", "b"] and s.labels.tolist() == [0, 0, 1, 1]
    write_image_folder(tmp_path / "vehicles", classes=("bus", "train"), per_class=2)
    v = _loads_quietly(tmp_path / "vehicles", cache=False, num_workers=1)
    assert list(v) == ["train"] and v["train"].classes == ["bus", "train"]


# ------------------------------------------------------------------ 7: 16-bit images
def test_16bit_grey_png_is_scaled_like_pil_scales_16bit_rgb(tmp_path):
    """PIL reads a 16-bit RGB PNG by the high byte of each sample; a 16-bit grey PNG of the same
    values now decodes to the same 8-bit values (before: clipped at 255, solid white)."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, size=(12, 10), dtype=np.uint16)
    for c in ("cat", "dog"):
        (tmp_path / "g" / c).mkdir(parents=True)
        (tmp_path / "rgb" / c).mkdir(parents=True)
        Image.fromarray(values).save(tmp_path / "g" / c / "0.png")  # PIL writes 16-bit grey itself
        (tmp_path / "rgb" / c / "0.png").write_bytes(png16_bytes(np.repeat(values[:, :, None], 3, axis=2)))
    assert Image.open(tmp_path / "g" / "cat" / "0.png").mode == "I;16"
    grey = load(tmp_path / "g", cache=False, num_workers=1)
    rgb = load(tmp_path / "rgb", cache=False, num_workers=1)  # PIL's own 16 -> 8 bit path
    assert torch.equal(grey.images, rgb.images)
    assert torch.equal(grey.images[0, 0], torch.from_numpy((values >> 8).astype(np.uint8)))
    assert 0 < grey.images.float().mean() < 250


def test_16bit_pgm_and_out_of_range_float_tiff(tmp_path):
    values = np.random.default_rng(1).integers(0, 65536, size=(6, 5), dtype=np.uint16)
    (tmp_path / "p" / "a").mkdir(parents=True)
    (tmp_path / "p" / "a" / "0.pgm").write_bytes(b"P5 5 6 65535\n" + values.astype(">u2").tobytes())
    got = load(tmp_path / "p", channels=1, cache=False, num_workers=1)
    assert torch.equal(got.images[0, 0], torch.from_numpy((values >> 8).astype(np.uint8)))
    (tmp_path / "f" / "a").mkdir(parents=True)
    Image.fromarray(values.astype(np.float32)).save(tmp_path / "f" / "a" / "0.tif")
    with pytest.raises(UserError, match=r"0\.tif: a floating-point image with values .* no defined 8-bit scale"):
        load(tmp_path / "f", cache=False, num_workers=1)


# ------------------------------------------------------------------ 8: stale or damaged cache
def _bmp(path: Path, value: int) -> None:
    Image.fromarray(np.full((12, 10, 3), value, np.uint8)).save(path, format="BMP")  # fixed byte size


def test_rewritten_file_with_older_or_same_mtime_misses_the_cache(tmp_path, cache_dir):
    write_image_folder(tmp_path / "f", ext="bmp")
    target = tmp_path / "f" / "cat" / "1.bmp"
    first = load(tmp_path / "f", num_workers=1)
    st = target.stat()
    _bmp(target, 7)
    assert target.stat().st_size == st.st_size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns - 10**10))  # older, as tar / rsync -t restore it
    older = load(tmp_path / "f", num_workers=1)
    assert torch.all(older.images[1] == 7) and not torch.equal(older.images, first.images)
    _bmp(target, 9)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns - 10**10))  # the very same size and mtime again
    same = load(tmp_path / "f", num_workers=1)
    assert torch.all(same.images[1] == 9)


def test_archive_replaced_with_same_size_and_mtime_misses_the_cache(tmp_path, cache_dir):
    write_image_folder(tmp_path / "s", ext="bmp")
    arc = tar_folder(tmp_path / "s", tmp_path / "s.tar")
    first = load(arc, num_workers=1)
    st = arc.stat()
    _bmp(tmp_path / "s" / "dog" / "0.bmp", 5)
    os.utime(tmp_path / "s" / "dog" / "0.bmp", ns=(st.st_atime_ns, st.st_mtime_ns))
    for f in (tmp_path / "s").rglob("*"):
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    tar_folder(tmp_path / "s", arc)
    os.utime(arc, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert arc.stat().st_size == st.st_size
    again = load(arc, num_workers=1)
    assert torch.all(again.images[3] == 5) and not torch.equal(again.images, first.images)


@pytest.mark.parametrize("part", ["images", "labels"])
def test_damaged_cache_entry_is_decoded_again(tmp_path, cache_dir, part):
    write_image_folder(tmp_path / "f")
    good = load_splits(tmp_path / "f", num_workers=1)["train"]
    npy = next(cache_dir.rglob(f"train.{part}.npy"))
    raw = bytearray(npy.read_bytes())
    raw[-5] ^= 0xFF  # one byte of the last image (or label) flipped
    npy.write_bytes(bytes(raw))
    with pytest.warns(DataWarning, match=r"data cache entry .* is damaged \(.*train\.\w+\.npy"):
        again = load_splits(tmp_path / "f", num_workers=1)["train"]
    assert torch.equal(again.images, good.images) and torch.equal(again.labels, good.labels)
    _loads_quietly(tmp_path / "f", num_workers=1)  # rewritten: the next read is clean


# ------------------------------------------------------------------ 9: symbolic links
@pytest.mark.parametrize("cache", [True, False])
def test_link_loop_is_skipped_with_a_warning(tmp_path, cache_dir, cache):
    write_image_folder(tmp_path / "d", splits=["train"])
    os.symlink("..", tmp_path / "d" / "train" / "cat" / "up")
    with pytest.warns(DataWarning, match=r"skipped 1 symbolic link\(s\) to a folder already read .*cat/up"):
        s = load(tmp_path / "d", cache=cache, num_workers=1)
    assert len(s) == 6 and s.class_counts() == [3, 3]


def test_two_link_loops_do_not_hang(tmp_path):
    write_image_folder(tmp_path / "d", splits=["train"])
    os.symlink("..", tmp_path / "d" / "train" / "cat" / "up")
    os.symlink("..", tmp_path / "d" / "train" / "dog" / "up")
    code = ("import warnings; warnings.simplefilter('ignore'); from robustlens.data import load; "
            f"print(len(load({str(tmp_path / 'd')!r}, cache=False, num_workers=1)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["6"], out.stderr[-2000:]


def test_broken_links_are_skipped_with_a_warning(tmp_path, cache_dir):
    write_image_folder(tmp_path / "d")
    os.symlink("nowhere", tmp_path / "d" / "README.txt")
    os.symlink("gone.png", tmp_path / "d" / "cat" / "9.png")
    with pytest.warns(DataWarning, match=r"skipped 2 broken symbolic link\(s\): .*README\.txt"):
        s = load(tmp_path / "d", num_workers=1)
    assert len(s) == 6


def test_links_out_of_the_root_are_followed_and_said(tmp_path, cache_dir):
    write_image_folder(tmp_path / "pool", classes=("bird",))
    write_image_folder(tmp_path / "d")
    os.symlink(tmp_path / "pool" / "bird", tmp_path / "d" / "bird")
    with pytest.warns(DataWarning, match=r"followed 1 symbolic link\(s\) out of the data folder: .*bird ->"):
        s = load(tmp_path / "d", cache=False, num_workers=1)
    assert s.classes == ["bird", "cat", "dog"] and s.class_counts() == [3, 3, 3]


def test_second_path_to_a_folder_is_read_once(tmp_path):
    """A link to a folder of the tree itself is skipped, whichever comes first in the walk."""
    write_image_folder(tmp_path / "d")
    os.symlink("../dog", tmp_path / "d" / "cat" / "alias")  # cat/alias sorts before dog/
    with pytest.warns(DataWarning, match="already read"):
        s = load(tmp_path / "d", cache=False, num_workers=1)
    assert len(s) == 6 and s.class_counts() == [3, 3]


# ------------------------------------------------------------------ 12: class sets per split
def test_splits_with_different_classes_are_refused(tmp_path):
    write_image_folder(tmp_path / "d" / "train", classes=("cat", "dog"))
    write_image_folder(tmp_path / "d" / "test", classes=("bird", "cat"))
    with pytest.raises(UserError, match=r"the splits have different classes: \w+/ has no (bird|dog)"):
        load_splits(tmp_path / "d", cache=False, num_workers=1)


def test_splits_with_the_same_classes_are_labelled_by_name(tmp_path):
    write_image_folder(tmp_path / "d" / "train", classes=("dog", "cat"), seed=1)
    write_image_folder(tmp_path / "d" / "test", classes=("cat", "dog"), seed=2)
    s = load_splits(tmp_path / "d", cache=False, num_workers=1)
    assert s["train"].classes == s["test"].classes == ["cat", "dog"]


# ------------------------------------------------------------------ 15: messages and bounds
def test_non_tar_file_says_so(tmp_path):
    (tmp_path / "t.tar").write_text("hello\n")
    with pytest.raises(UserError, match=r"t\.tar: not a readable tar archive"):
        load(tmp_path / "t.tar", cache=False)
    with pytest.raises(ValueError):
        archive.tar_index(b"hello\n")
    empty = tmp_path / "e.tar"
    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(UserError, match=r"e\.tar: the archive holds no files"):
        load(empty, cache=False)


def test_size_messages_name_the_flag(tmp_path, capsys):
    from robustlens.cli import main

    (tmp_path / "m" / "a").mkdir(parents=True)
    (tmp_path / "m" / "b").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "m" / "a" / "x.png")
    Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(tmp_path / "m" / "b" / "y.png")
    with pytest.raises(UserError, match=r"different sizes .*pass --size N to resize them"):
        load(tmp_path / "m", cache=False, num_workers=1)
    with pytest.raises(SystemExit) as e:
        main(["data", str(tmp_path / "m"), "--size", "100000", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--size: expected at most 4096, got 100000 (one 100000x100000 RGB image takes 27.9 GiB" in err
    with pytest.raises(UserError, match=r"size=100000: expected at most 4096"):
        load(tmp_path / "m", size=100000, cache=False)


def test_decoded_size_beyond_memory_is_refused_with_the_estimate(tmp_path, monkeypatch):
    from robustlens.data.readers import base

    write_image_folder(tmp_path / "d")
    monkeypatch.setattr(base, "_physical_memory", lambda: 1 << 20)
    with pytest.raises(UserError, match=r"6 images at 512x512 with 3 channel\(s\) take 4\.5 MiB .* 1\.0 MiB of memory"):
        load(tmp_path / "d", size=512, cache=False, num_workers=1)
