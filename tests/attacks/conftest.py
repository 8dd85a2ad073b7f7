"""Fixtures of the attacks tests (the models and data they share are in helpers_attacks.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread_per_module():
    """Tiny models run fastest on one thread (two threads spin on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
