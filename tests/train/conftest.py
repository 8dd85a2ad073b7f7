"""Fixtures of the training tests: the tiny learnable data sets (the plain builders ``toy_set``
and ``toy_model`` live in ``helpers_train``, which subprocesses and DDP workers import too)."""

from __future__ import annotations

import pytest
from helpers_train import toy_set


@pytest.fixture(scope="module")
def modes_data():
    """192 images: every mode learns on it in 3 epochs of 32-image batches."""
    return toy_set(n=192, size=12)


@pytest.fixture(scope="module")
def resume_data():
    """144 images: 16 held out for the check, 4 steps of 32 per epoch (the resume tests count on it)."""
    return toy_set(n=144, size=12)
