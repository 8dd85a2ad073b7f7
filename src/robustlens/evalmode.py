"""``eval_mode``: the one way robustlens puts models in eval mode and restores them.

Attacks, probes, saliency, feature visualisation, construction and the training loop's
per-epoch check all evaluate a model that may be in training mode. They wrap that work in
:func:`eval_mode`, which records every submodule's own ``training`` flag (a model may be
partly frozen, e.g. a fine-tuned head on an eval-mode backbone) and restores each one
exactly, also when the work raises.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Every module of ``models`` in eval mode inside the block; each one's previous mode after it."""
    modes = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
