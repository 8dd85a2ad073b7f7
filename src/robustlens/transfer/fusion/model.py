"""The late-fusion model (Itazuri et al. 2019, Sec. 4.2): one or two pre-trained backbones
whose penultimate features are concatenated and fed to a new linear head."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlens.errors import UserError
from robustlens.models.base import ImageClassifier


class LateFusion(ImageClassifier):
    """One or two backbones whose penultimate features feed a new linear head.

    ``forward(x)`` takes images in [0, 1]; each backbone applies its own normalisation
    (``backbone.penultimate(x)``), so the fused model keeps the robustlens model contract
    (its own ``normalize`` is the identity). ``penultimate(x)`` is the concatenation
    ``[g_a(x), g_b(x)]`` of size ``F_a + F_b``; ``head`` is ``nn.Linear(F_a + F_b, num_classes)``.

    ``freeze_backbones()`` makes the backbones fixed feature extractors (no gradients, and
    kept in eval mode so batch-norm statistics do not move): the linear-probe setting.
    """

    arch = "late_fusion"

    def __init__(self, backbone_a: nn.Module, backbone_b: nn.Module | None = None, num_classes: int = 10) -> None:
        super().__init__((0.0,), (1.0,))  # identity: each backbone normalises its own input
        if not isinstance(num_classes, int) or num_classes < 1:
            raise UserError(f"num_classes: expected a positive integer, got {num_classes!r}")
        backbones = [backbone_a] + ([backbone_b] if backbone_b is not None else [])
        for i, b in enumerate(backbones):
            if not hasattr(b, "penultimate") or not int(getattr(b, "num_features", 0) or 0):
                raise UserError(f"backbone {i}: expected a robustlens ImageClassifier (penultimate(), num_features), got {type(b).__name__}")
        if backbone_b is not None and backbone_b is backbone_a:
            raise UserError("late fusion: the two backbones are the same object; pass two different models")
        self.backbones = nn.ModuleList(backbones)
        self.num_features = sum(int(b.num_features) for b in backbones)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.frozen = False
        self.config = {"num_classes": num_classes, "backbones": [getattr(b, "arch", type(b).__name__) for b in backbones]}

    @property
    def head(self) -> nn.Linear:
        return self.fc

    def forward_features(self, x: Tensor) -> Tensor:
        """``[g_a(x), g_b(x)]``: each backbone's own ``penultimate`` (it normalises ``x`` itself)."""
        return torch.cat([b.penultimate(x) for b in self.backbones], dim=1)

    def penultimate(self, x: Tensor) -> Tensor:
        return self.forward_features(x)

    def freeze_backbones(self, frozen: bool = True) -> "LateFusion":
        self.frozen = frozen
        for p in self.backbones.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> "LateFusion":
        super().train(mode)
        if self.frozen:
            self.backbones.eval()
        return self
