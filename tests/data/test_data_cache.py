"""Decode-once cache: second load hits it and returns identical tensors; keys follow the source."""

from __future__ import annotations

import importlib
import os
import time

import numpy as np
import torch
from PIL import Image

from helpers_data import tar_folder, write_image_folder
from robustlens.data import load_splits
from robustlens.data.cache import cache_root, entry_dir


def counting(monkeypatch, name):
    """Count the reads of format ``name``: each of its reads decodes through ``decode_many`` once."""
    module = importlib.import_module(f"robustlens.data.readers.{name}")
    calls = []
    real = module.decode_many

    def wrapped(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(module, "decode_many", wrapped)
    return calls


def test_second_load_hits_cache(tmp_path, cache_dir, monkeypatch):
    write_image_folder(tmp_path / "s", splits=["train", "test"])
    arc = tar_folder(tmp_path / "s", tmp_path / "s.tar.gz")
    calls = counting(monkeypatch, "archive")
    first = load_splits(arc, num_workers=1)
    second = load_splits(arc, num_workers=1)
    assert len(calls) == 1
    assert cache_root() == cache_dir and any(cache_dir.rglob("meta.json"))
    for split in first:
        assert torch.equal(first[split].images, second[split].images)
        assert torch.equal(first[split].labels, second[split].labels)
        assert first[split].classes == second[split].classes
        assert "cache" in second[split].meta
    images = np.load(next(cache_dir.rglob("train.images.npy")), mmap_mode="r")
    assert isinstance(images, np.memmap) and images.dtype == np.uint8
    # other options -> another entry; cache=False -> no cache at all
    load_splits(arc, size=8, num_workers=1)
    assert len(calls) == 2
    load_splits(arc, cache=False, num_workers=1)
    assert len(calls) == 3


def test_changed_source_misses_and_interrupted_entry_is_ignored(tmp_path, cache_dir, monkeypatch):
    write_image_folder(tmp_path / "f")
    calls = counting(monkeypatch, "folder")
    a = load_splits(tmp_path / "f", num_workers=1)["train"]
    new = np.full((12, 10, 3), 7, np.uint8)
    Image.fromarray(new).save(tmp_path / "f" / "cat" / "9.png")
    later = time.time() + 5
    os.utime(tmp_path / "f" / "cat" / "9.png", (later, later))
    b = load_splits(tmp_path / "f", num_workers=1)["train"]
    assert len(calls) == 2 and len(b) == len(a) + 1
    entry = entry_dir(tmp_path / "f", "folder", {"size": None, "channels": None, "resample": "bilinear"})
    assert (entry / "meta.json").exists()
    (entry / "meta.json").unlink()  # as if the first load had been killed before finishing
    c = load_splits(tmp_path / "f", num_workers=1)["train"]
    assert len(calls) == 3 and torch.equal(c.images, b.images) and (entry / "meta.json").exists()
    assert not list(entry.glob(".*"))  # no temporary files left behind


def test_explicit_cache_dir(tmp_path, cache_dir):
    write_image_folder(tmp_path / "f")
    load_splits(tmp_path / "f", cache=tmp_path / "elsewhere", num_workers=1)
    assert any((tmp_path / "elsewhere").rglob("meta.json")) and not cache_dir.exists()
