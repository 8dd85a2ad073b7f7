"""Generation with large targeted perturbations (perceptually aligned gradients).

Tsipras et al. (2019) and Santurkar et al. (2019) showed that a large targeted L2
perturbation of an image (or of noise) under a *robust* model makes it look like the
target class; Aggarwal et al. find the same for low-eps adversarially trained models.
:func:`generate` runs that targeted L2 PGD: minimise CE(f(x), target) over the L2 ball
of radius eps around the start (intersected with [0, 1]), normalised-gradient steps,
projection after each step (:class:`robustlens.threat.L2`).

Default radius: eps = 40 at 3 x 224 x 224 (Santurkar et al.'s ImageNet setting), scaled by
sqrt(d / d_224) for an input of d = C x H x W values (so 40 / 7 ~ 5.7 at 3 x 32 x 32),
keeping the per-pixel RMS change the same. Steps: 60, step size 2.5 eps / steps (Madry et
al.'s rule).

:func:`perceptual_alignment` turns "looks like the target" into a number: the share of
generated images that an *independently trained* judge (another seed, never used to
generate) assigns to the target class. Perturbations that only exploit the generator's
non-robust features rarely transfer; perceptually aligned ones do.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlens.errors import UserError
from robustlens.progress import track
from robustlens.explain.saliency import Target, check_images, check_target
from robustlens.threat import L2

EPS_224 = 40.0


def generation_eps(shape: tuple[int, ...] | torch.Size, eps_224: float = EPS_224) -> float:
    """eps_224 x sqrt(C H W / (3 x 224 x 224)) for an image of shape (C, H, W) or (N, C, H, W)."""
    c, h, w = tuple(shape)[-3:]
    return float(eps_224 * math.sqrt(c * h * w / (3 * 224 * 224)))


def noise_images(n: int, shape: tuple[int, int, int], generator: torch.Generator | None = None, device: Any = "cpu") -> Tensor:
    """Start points drawn uniformly from [0, 1]^(C x H x W)."""
    return torch.rand((n, *shape), generator=generator).to(device)


def random_targets(labels: Tensor, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """A target class different from each label, uniform over the other classes."""
    if num_classes < 2:
        raise UserError("targets: need at least 2 classes")
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels.cpu() + shift) % num_classes


def generate(
    model: nn.Module,
    start: Tensor,
    target: Target,
    eps: float | None = None,
    steps: int = 60,
    step_size: float | None = None,
    internal_batch_size: int = 64,
    progress: bool = False,
) -> Tensor:
    """Targeted L2 PGD from ``start`` towards class ``target`` (images in [0, 1]).

    Each step: g = d CE(f(x), t) / dx, x <- x - step_size * g / ||g||_2, then projection
    onto {||x - start||_2 <= eps} and [0, 1]. ``eps`` defaults to :func:`generation_eps`.
    The model's mode is left as it is and its parameters get no gradients.
    """
    x0 = check_images(start, "start").detach()
    t = check_target(model, x0, target)
    if isinstance(steps, bool) or int(steps) <= 0:
        raise UserError(f"steps: expected a positive integer, got {steps!r}")
    eps = generation_eps(x0.shape) if eps is None else float(eps)
    threat = L2(eps)
    step = 2.5 * threat.eps / int(steps) if step_size is None else float(step_size)
    if step <= 0:
        raise UserError(f"step_size: expected a positive number, got {step_size!r}")
    out = []
    for s in range(0, len(x0), int(internal_batch_size)):
        xs, ts = x0[s : s + internal_batch_size], t[s : s + internal_batch_size]
        x = xs.clone()
        batch = f"batch {s // int(internal_batch_size) + 1}/{-(-len(x0) // int(internal_batch_size))}"
        for _ in track(range(int(steps)), "generate", unit="step", enabled=progress, step=lambda _: batch):
            x.requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(x), ts, reduction="sum")
                (g,) = torch.autograd.grad(loss, x)
            with torch.no_grad():
                x = threat.project(threat.ascent_step(x.detach(), -g, step), xs)
        out.append(x.detach())
    return torch.cat(out)


@torch.no_grad()
def target_rate(model: nn.Module, images: Tensor, target: Tensor, batch_size: int = 256) -> float:
    """Share of ``images`` that ``model`` classifies as ``target``."""
    hits = 0
    for s in range(0, len(images), batch_size):
        hits += int((model(images[s : s + batch_size]).argmax(1) == target[s : s + batch_size].to(images.device)).sum())
    return hits / max(1, len(images))


def perceptual_alignment(
    generators: Mapping[str, nn.Module],
    judge: nn.Module,
    start: Tensor,
    target: Target,
    **generate_opts: Any,
) -> dict[str, Any]:
    """Perceptual-alignment score of each generator (e.g. {"STD": m1, "ADV": m2}).

    For each generator: generate from ``start`` towards ``target``; report
    ``judge_target_rate`` (the score: share the independent ``judge`` assigns to the
    target), ``generator_target_rate`` (does the attack reach the target on its own
    model), ``judge_start_rate`` (the judge's target share before any change) and the
    mean L2 distance travelled. Returns also ``images`` (the generated tensors).
    """
    x0 = check_images(start, "start")
    t = check_target(judge, x0, target)
    base = target_rate(judge, x0, t)
    out: dict[str, Any] = {"judge_start_rate": base, "models": {}, "images": {}}
    for name, g in generators.items():
        x = generate(g, x0, t, **generate_opts)
        out["images"][name] = x
        out["models"][name] = {
            "judge_target_rate": target_rate(judge, x, t),
            "generator_target_rate": target_rate(g, x, t),
            "mean_l2": float((x - x0).flatten(1).norm(dim=1).mean()),
            "eps": generate_opts.get("eps") or generation_eps(x0.shape),
        }
    return out


__all__ = ["EPS_224", "generate", "generation_eps", "noise_images", "perceptual_alignment", "random_targets", "target_rate"]
