"""Boxes from saliency maps, IoU, pointing game, evaluation on the procedural set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers_explain import small_model, procedural_test_set
from robustlens.errors import UserError
from robustlens.explain.localize import (
    box_accuracy,
    box_iou,
    evaluate_localization,
    keep_mask,
    pointing_game,
    saliency_box,
    tolerance_pixels,
)


def hand_map() -> np.ndarray:
    m = np.zeros((20, 30))
    m[4:10, 5:15] = 1.0  # big blob: 60 px, energy 60
    m[15:17, 25:28] = 2.0  # small bright blob: 6 px, energy 12
    return m


def test_box_of_largest_component_and_of_all():
    m = hand_map()
    assert saliency_box(m, 0.99, "energy", "largest") == (5, 4, 15, 10)
    assert saliency_box(m, 0.99, "energy", "all") == (5, 4, 28, 17)
    # max threshold at 0.75: only the bright blob survives
    assert saliency_box(m, 0.75, "max") == (25, 15, 28, 17)
    # (C, H, W) maps are reduced by sum of |a|
    assert saliency_box(np.stack([m, -m]), 0.99, "energy", "largest") == (5, 4, 15, 10)


def test_energy_threshold_keeps_smallest_top_set():
    m = hand_map()
    keep = keep_mask(m, 12 / 72)  # the bright pixels alone hold exactly 12/72 of the energy
    assert keep.sum() == 6 and keep[15:17, 25:28].all()
    assert keep_mask(m, 13 / 72).sum() == 7


def test_box_iou_known_values():
    a = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 4, 4]], dtype=torch.float32)
    b = torch.tensor([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 2, 2]], dtype=torch.float32)
    assert torch.allclose(box_iou(a, b), torch.tensor([1.0, 50 / 150, 0.0, 4 / 16], dtype=torch.float64))
    assert box_accuracy(a, b) == 0.25


def test_pointing_game_with_tolerance():
    maps = torch.zeros(3, 1, 224, 224)
    maps[0, 0, 50, 50] = 1  # inside the box
    maps[1, 0, 50, 70] = 1  # 10 px right of the box edge x1=60 (last object column 59): within 15 px
    maps[2, 0, 50, 100] = 1  # far away
    boxes = torch.tensor([[40, 40, 60, 60]] * 3, dtype=torch.float32)
    assert pointing_game(maps, boxes=boxes).tolist() == [True, True, False]
    assert pointing_game(maps, boxes=boxes, tolerance=0).tolist() == [True, False, False]
    masks = torch.zeros(3, 224, 224, dtype=torch.bool)
    masks[:, 45:50, 45:50] = True
    assert pointing_game(maps, masks=masks).tolist() == [True, False, False]
    assert tolerance_pixels(32, 32) == pytest.approx(15 * 32 / 224)
    with pytest.raises(UserError):
        pointing_game(maps)


def test_evaluate_localization_on_procedural_set():
    data = procedural_test_set()
    model = small_model(dtype=torch.float32, num_classes=data.num_classes)
    res = evaluate_localization(model, data, "gradcam")
    assert res["n"] == len(data)
    for k in ("box_accuracy", "mean_iou", "pointing_accuracy"):
        assert 0.0 <= res[k] <= 1.0
    # an oracle map (the mask itself) localises perfectly
    maps = data.masks[:, None].float()
    assert pointing_game(maps, masks=data.masks).all()
    boxes = torch.tensor([saliency_box(m, 1.0, "max", "all") for m in maps], dtype=torch.float32)
    assert box_accuracy(boxes, data.boxes) == 1.0
