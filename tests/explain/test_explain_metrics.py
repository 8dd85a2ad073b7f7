"""Metrics the study's stages used to compute themselves, now in the library: the share of a
saliency map on the object (explain.localize.object_energy) and the high-frequency share of
channel visualisations (explain.featvis.hf_share)."""

from __future__ import annotations

import pytest
import torch

from robustlens.explain.featvis import hf_share
from robustlens.explain.localize import object_energy


def test_object_energy_is_the_share_of_abs_saliency_inside_the_mask():
    maps = torch.zeros(2, 3, 4, 4)
    maps[0, :, :2] = -1.0  # all of image 0's energy in the top half
    maps[1] = 1.0  # image 1 spread evenly
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, :2] = True
    assert object_energy(maps, masks) == pytest.approx([1.0, 0.5])
    assert object_energy(torch.zeros(1, 3, 4, 4), masks[:1]) == [0.0]  # no saliency: 0, not nan


def test_hf_share_separates_flat_and_checkerboard_images():
    flat = torch.full((2, 3, 8, 8), 0.5)
    assert hf_share(flat) == 0.0
    yy, xx = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    checker = ((yy + xx) % 2).float().expand(2, 3, 8, 8)
    assert hf_share(checker) == pytest.approx(1.0)
    smooth = (yy.float() / 7).expand(1, 3, 8, 8)
    assert 0.0 < hf_share(smooth) < 0.5
