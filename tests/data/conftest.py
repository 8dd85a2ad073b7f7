"""Fixtures of the data tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("ROBUSTLENS_CACHE", str(d))
    return d
