"""Fixtures of the probes tests."""

from __future__ import annotations

import pytest
import torch

from robustlens.models import create


@pytest.fixture()
def checkpoints(tmp_path):
    from robustlens.models.checkpoint import save_checkpoint

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = create("small_cnn", num_classes=10, width=4)
        p = tmp_path / f"m{seed}.safetensors"
        save_checkpoint(p, m, {})
        paths.append(str(p))
    return paths
