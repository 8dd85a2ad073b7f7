"""Threat models: the one place that knows about norms.

Shared by training and attacks. Each threat model is an eps-ball around the clean image
intersected with the valid image box [0, 1] (images are float NCHW in [0, 1]). Modelled on
the ``attack_steps`` of MadryLab's ``robustness`` (a small class per norm with project /
step / random start), typed and device-agnostic.

Clipping to [0, 1] after projecting onto the ball keeps the point in the ball for every
l_p norm: clipping only shrinks each coordinate of the perturbation towards zero.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from robustlens._eps import parse_eps, parse_threat_spec  # noqa: F401  (re-exported)
from robustlens.errors import UserError

_TINY = 1e-12


def _view(scalar: Tensor, like: Tensor) -> Tensor:
    return scalar.view(-1, *([1] * (like.dim() - 1)))


class ThreatModel(ABC):
    """An l_p ball of radius ``eps`` around the clean input, intersected with [0, 1]."""

    norm: str = ""

    def __init__(self, eps: float) -> None:
        eps = parse_eps(eps)
        self.eps = eps

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:.6g})"

    def to_dict(self) -> dict:
        return {"norm": self.norm, "eps": self.eps}

    @abstractmethod
    def lengths(self, delta: Tensor) -> Tensor:
        """Per-example norm of ``delta`` (shape (N,))."""

    @abstractmethod
    def _project_delta(self, delta: Tensor) -> Tensor:
        """Project ``delta`` onto the ball (ignoring the box)."""

    @abstractmethod
    def _random_delta(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """A perturbation drawn uniformly from the ball."""

    @abstractmethod
    def direction(self, grad: Tensor) -> Tensor:
        """Steepest-ascent direction of unit ``norm``-length for the given gradient."""

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Project ``x_adv`` onto the ball around ``x`` and the box [0, 1]."""
        delta = self._project_delta(x_adv - x)
        return (x + delta).clamp_(0.0, 1.0)

    def random_init(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A point drawn uniformly from the ball around ``x``, clipped to [0, 1]."""
        return (x + self._random_delta(x, generator)).clamp_(0.0, 1.0)

    def ascent_step(self, x_adv: Tensor, grad: Tensor, step_size: float | Tensor) -> Tensor:
        """One steepest-ascent step of length ``step_size`` (not yet projected)."""
        if isinstance(step_size, Tensor) and step_size.dim() == 1:
            step_size = _view(step_size, x_adv)
        return x_adv + step_size * self.direction(grad)

    def contains(self, x_adv: Tensor, x: Tensor, atol: float = 1e-6) -> Tensor:
        """Per-example check: inside the ball (up to ``atol``) and inside [0, 1]."""
        in_ball = self.lengths(x_adv - x) <= self.eps * (1 + 1e-5) + atol
        flat = x_adv.flatten(1)
        in_box = (flat.min(1).values >= -atol) & (flat.max(1).values <= 1 + atol)
        return in_ball & in_box


class Linf(ThreatModel):
    """L-infinity ball: ``max_i |delta_i| <= eps``; the ascent direction is ``sign(grad)``."""

    norm = "linf"

    def __init__(self, eps: float) -> None:
        super().__init__(eps)
        if self.eps > 1:
            raise UserError(f"--eps: an L-inf eps above 1 covers the whole image box [0, 1]; got {self.eps:g}")

    def lengths(self, delta: Tensor) -> Tensor:
        return delta.flatten(1).abs().amax(1)

    def _project_delta(self, delta: Tensor) -> Tensor:
        return delta.clamp(-self.eps, self.eps)

    def _random_delta(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * self.eps

    def direction(self, grad: Tensor) -> Tensor:
        return grad.sign()


class L2(ThreatModel):
    """L2 ball: ``||delta||_2 <= eps``; the ascent direction is ``grad / ||grad||_2``."""

    norm = "l2"

    def lengths(self, delta: Tensor) -> Tensor:
        return delta.flatten(1).norm(p=2, dim=1)

    def _project_delta(self, delta: Tensor) -> Tensor:
        n = self.lengths(delta)
        factor = torch.clamp(self.eps / (n + _TINY), max=1.0)
        return delta * _view(factor, delta)

    def _random_delta(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        # Uniform in the ball: Gaussian direction, radius eps * U^(1/d).
        n, d = x.shape[0], x[0].numel()
        g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        g = g / _view(g.flatten(1).norm(dim=1) + _TINY, g)
        r = torch.rand(n, generator=generator, device=x.device, dtype=x.dtype).pow(1.0 / d) * self.eps
        return g * _view(r, g)

    def direction(self, grad: Tensor) -> Tensor:
        return grad / _view(grad.flatten(1).norm(dim=1) + _TINY, grad)


class L1(ThreatModel):
    """L1 ball: ``||delta||_1 <= eps``.

    The ascent direction is the sparse L1 descent of Tramer & Boneh (2019): the sign of the
    gradient on its top ``1 - sparsity`` fraction of coordinates (by magnitude), scaled to unit
    L1 length. Projection is the exact Euclidean projection onto the L1 ball (Duchi et al. 2008).
    """

    norm = "l1"

    def __init__(self, eps: float, sparsity: float = 0.99) -> None:
        super().__init__(eps)
        if not 0 <= sparsity < 1:
            raise UserError(f"L1 sparsity: expected a value in [0, 1), got {sparsity}")
        self.sparsity = sparsity

    def lengths(self, delta: Tensor) -> Tensor:
        return delta.flatten(1).abs().sum(1)

    def _project_delta(self, delta: Tensor) -> Tensor:
        flat = delta.flatten(1)
        a = flat.abs()
        inside = a.sum(1) <= self.eps
        if bool(inside.all()):
            return delta
        # Duchi et al. (2008), Fig. 1: sort, cumulative sums, find the threshold theta.
        mu, _ = torch.sort(a, dim=1, descending=True)
        cumsum = mu.cumsum(1)
        ar = torch.arange(1, flat.shape[1] + 1, device=delta.device, dtype=delta.dtype)
        cond = mu - (cumsum - self.eps) / ar > 0
        rho = cond.to(torch.int64).cumsum(1).argmax(1, keepdim=True)  # last index where cond holds
        theta = (cumsum.gather(1, rho) - self.eps) / (rho.to(delta.dtype) + 1)
        proj = flat.sign() * (a - theta).clamp(min=0)
        proj = torch.where(inside[:, None], flat, proj)
        return proj.view_as(delta)

    def _random_delta(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        # Uniform in the L1 ball: Laplace direction on the L1 sphere, radius eps * U^(1/d).
        n, d = x.shape[0], x[0].numel()
        e = -torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype).clamp_min(_TINY).log()
        s = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
        v = e * s
        v = v / _view(v.flatten(1).abs().sum(1) + _TINY, v)
        r = torch.rand(n, generator=generator, device=x.device, dtype=x.dtype).pow(1.0 / d) * self.eps
        return v * _view(r, v)

    def direction(self, grad: Tensor) -> Tensor:
        flat = grad.flatten(1)
        a = flat.abs()
        k = max(1, int(round((1 - self.sparsity) * flat.shape[1])))
        thresh = a.topk(k, dim=1).values[:, -1:]
        mask = (a >= thresh) & (a > 0)
        d = flat.sign() * mask
        d = d / (d.abs().sum(1, keepdim=True) + _TINY)
        return d.view_as(grad)


THREATS: dict[str, type[ThreatModel]] = {"linf": Linf, "l2": L2, "l1": L1}


def make_threat(norm: str, eps: float | str) -> ThreatModel:
    """Build a threat model from its name (``linf``, ``l2``, ``l1``) and eps (``"8/255"`` works)."""
    key = str(norm).lower().replace("-", "").replace("_", "")
    key = {"inf": "linf", "linfty": "linf", "linfinity": "linf"}.get(key, key)
    if key not in THREATS:
        raise UserError(f"--threat: unknown norm {norm!r}; expected one of {', '.join(THREATS)}")
    return THREATS[key](parse_eps(eps))
