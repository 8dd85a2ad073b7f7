"""Fixtures of the transfer tests: every test runs on one thread (tiny tensors, shared cores).

The plain builders ``tiny_model`` / ``tiny_set`` live in ``tests/helpers_transfer.py``, which
``tests/test_transfer_cli.py`` imports too; they move here when that file does.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread_always(one_thread):
    yield
