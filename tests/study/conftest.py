"""Fixtures of the study tests: writers of the tiny spec that runs end to end in seconds
(the spec text itself is in ``helpers_study.py``, which the study benchmarks import too)."""

from __future__ import annotations

import pytest

import helpers_study


@pytest.fixture(scope="session")
def write_tiny_spec():
    """``write_tiny_spec(folder, **replace) -> Path``: the tiny spec in ``folder`` (``replace``: text substitutions)."""
    return helpers_study.write_tiny_spec


@pytest.fixture(scope="session")
def write_tiny_transfer_spec():
    """``write_tiny_transfer_spec(folder, name="tiny") -> Path``: the tiny spec with transfer and construct enabled."""
    return helpers_study.write_tiny_transfer_spec
