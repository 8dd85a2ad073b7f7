"""Fixtures of the transfer tests: every test runs on one thread (tiny tensors, shared cores).

The plain builders ``tiny_model`` / ``tiny_set`` live in ``helpers_transfer.py`` beside this file.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread_always(one_thread):
    yield
