"""Robustness of explanations: how much does a map change under a tiny input change?

    s = max_sensitivity(model, x, y, "vanilla", radius=0.02, n_samples=10, generator=g)  # (N,)
    l = local_lipschitz(model, x, y, "vanilla", radius=0.02, n_samples=10, generator=g)  # (N,)

* **Max-sensitivity** (Yeh et al. 2019, Def. 3.1; captum.metrics.sensitivity_max):
  max_{||delta||_inf <= r} ||phi(x + delta) - phi(x)||_F / ||phi(x)||_F, estimated by the
  largest of ``n_samples`` draws delta ~ U([-r, r]^d) (captum's default perturbation; a map
  that is identically zero counts with norm 1, as in captum).
* **Local Lipschitz estimate** (Alvarez-Melis & Jaakkola 2018, eq. 5):
  max_{x' in B(x, r)} ||phi(x') - phi(x)||_2 / ||x' - x||_2 over the same draws.

Both come from one pass (:func:`explanation_changes`): the n x N perturbed images are
explained in chunks of ``internal_batch_size`` rows through
:func:`robustlens.explain.saliency.saliency`, so memory is bounded by that batch. A method
that draws noise itself (SmoothGrad, GradientSHAP, ...) gets a fresh generator seeded with
``method_seed`` for every chunk, so its own Monte-Carlo noise is the same at x and x + delta
only as far as the chunk layouts agree (the measured change includes the rest).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from robustlens.errors import UserError
from robustlens.explain.saliency import (_NOISE_METHODS, Target, _chunks, _NoiseSamples, _positive, check_images,
                                         check_target, saliency)


def _explain(model: nn.Module, x: Tensor, t: Tensor, method: str, b: int, seed: int, opts: dict) -> Tensor:
    kw = dict(opts)
    if method in _NOISE_METHODS and "noise" not in kw and "draws" not in kw:
        kw["generator"] = torch.Generator(device=x.device).manual_seed(seed)
    return saliency(model, x, t, method, internal_batch_size=b, **kw).detach()


def explanation_changes(
    model: nn.Module, images: Tensor, target: Target, method: str, radius: float = 0.02, n_samples: int = 10,
    perturbations: Tensor | None = None, generator: torch.Generator | None = None, method_seed: int = 0,
    internal_batch_size: int = 64, **method_opts: Any,
) -> dict[str, Tensor]:
    """``{"change": (n, N) ||phi(x + delta_s) - phi(x)||, "delta": (n, N) ||delta_s||_2, "norm": (N,) ||phi(x)||}``.

    delta_s = r (2 u - 1), u ~ U[0, 1) of the images' shape (one ``torch.rand`` per sample from
    ``generator``), or ``perturbations`` (n, N, C, H, W) as given (then ``radius`` is unused).
    """
    x = check_images(images)
    t = check_target(model, x, target)
    n_samples, b = _positive(n_samples, "n_samples"), _positive(internal_batch_size, "internal_batch_size")
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or radius <= 0:
        raise UserError(f"radius: expected a number > 0, got {radius!r}")
    draws = _UniformSamples(x, n_samples, perturbations, generator, float(radius))
    phi0 = _explain(model, x, t, method, b, method_seed, method_opts)
    n = x.shape[0]
    change = torch.empty(n_samples * n, dtype=x.dtype, device=x.device)
    delta = torch.empty_like(change)
    for ch in _chunks(n_samples * n, b):
        i, d = draws.rows(ch)
        phi = _explain(model, x[i] + d, t[i], method, b, method_seed, method_opts)
        change[ch] = (phi - phi0[i]).flatten(1).norm(dim=1)
        delta[ch] = d.flatten(1).norm(dim=1)
    return {"change": change.view(n_samples, n), "delta": delta.view(n_samples, n), "norm": phi0.flatten(1).norm(dim=1)}


class _UniformSamples(_NoiseSamples):
    """delta_s = r (2 u - 1), u ~ U[0, 1): one ``torch.rand`` of the images' shape per sample."""

    def __init__(self, x: Tensor, n: int, given: Tensor | None, generator: torch.Generator | None, radius: float) -> None:
        super().__init__(x, n, given, generator, name="perturbations")
        self.radius = radius

    def sample(self, s: int) -> Tensor:
        if self._cached is None or self._cached[0] != s:
            x = self.x
            if self.noise is not None:
                e = self.noise[s].to(x)
            else:
                e = self.radius * (2 * torch.rand(x.shape, generator=self.generator, dtype=x.dtype, device=x.device) - 1)
            self._cached = (s, e)
        return self._cached[1]


def sensitivity_from(changes: dict[str, Tensor]) -> Tensor:
    """Max-sensitivity per image from :func:`explanation_changes` (captum's normalisation)."""
    norm = torch.where(changes["norm"] == 0, torch.ones_like(changes["norm"]), changes["norm"])
    return (changes["change"] / norm).amax(0)


def lipschitz_from(changes: dict[str, Tensor]) -> Tensor:
    """Local Lipschitz estimate per image from :func:`explanation_changes`."""
    return (changes["change"] / changes["delta"].clamp(min=1e-30)).amax(0)


def max_sensitivity(model: nn.Module, images: Tensor, target: Target, method: str, **kw: Any) -> Tensor:
    """Max-sensitivity (Yeh et al. 2019, Def. 3.1) of ``method``'s maps, per image; keywords as :func:`explanation_changes`."""
    return sensitivity_from(explanation_changes(model, images, target, method, **kw))


def local_lipschitz(model: nn.Module, images: Tensor, target: Target, method: str, **kw: Any) -> Tensor:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018, eq. 5) of ``method``'s maps, per image."""
    return lipschitz_from(explanation_changes(model, images, target, method, **kw))


__all__ = ["explanation_changes", "lipschitz_from", "local_lipschitz", "max_sensitivity", "sensitivity_from"]
