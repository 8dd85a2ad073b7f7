"""Saliency maps with one signature for all methods.

    maps = saliency(model, images, target, method="ig", steps=50)   # same shape as images

Every method takes float images in [0, 1], NCHW (robustlens models normalise their input
themselves, so maps live in pixel space) and returns a tensor of the input's shape.
Work is split into chunks of ``internal_batch_size`` rows (images, noisy copies or path
points) so memory stays bounded whatever the number of steps or samples (captum expands
all steps into one batch unless told otherwise). Only input gradients are computed
(``torch.autograd.grad`` w.r.t. the input), never weight gradients. The model's
train/eval mode is left as it is: call ``model.eval()`` first.

Methods (names as accepted by :func:`saliency`):

* ``vanilla``: gradient of the target logit, d f_t(x) / dx (Simonyan et al. 2014; main
  paper eq. 7 / 11).
* ``loss``: gradient of the cross-entropy loss at the target, d L(x, t) / dx (Tsipras et
  al. 2019; main paper eq. 8-9 / 12).
* ``guided``: guided backpropagation (Springenberg et al. 2015; main paper eq. 13-15):
  at every ReLU the backward pass keeps a gradient only where the forward input was
  positive *and* the incoming gradient is positive. ReLUs are intercepted with a
  :class:`torch.overrides.TorchFunctionMode`, so it works for ``nn.ReLU`` modules, one
  module reused several times, in-place ReLUs and functional ``F.relu`` / ``torch.relu``
  / ``Tensor.relu`` alike (captum's module hooks miss the last two).
* ``smoothgrad``: SmoothGrad (Smilkov et al. 2017; main paper eq. 16) over any base
  method: the mean of the base map over ``n_samples`` noisy copies x + N(0, sigma^2),
  sigma = ``noise_level`` x (max(x) - min(x)) per image (0.2 and 50 samples as in the
  main paper authors' code).
* ``ig``: integrated gradients (Sundararajan et al. 2017, eq. 1 / main paper eq. 17):
  (x - x') * int_0^1 df_t(x' + a (x - x')) / dx da, by Riemann sums or Gauss-Legendre
  quadrature; the completeness gap ("convergence delta") on request.
* ``ig_path_average``: the main paper authors' variant: the path-averaged gradient only,
  *not* multiplied by (x - x').
* ``input_x_gradient``: x * d f_t(x) / dx (Shrikumar et al. 2016).
* ``gradient_shap``: GradientSHAP / expected gradients (Lundberg & Lee 2017): the mean of
  (x + e - x') * df_t(x' + a (x + e - x')) / dx over baselines x' drawn from a distribution,
  a ~ U(0, 1) and noise e.
* ``deeplift``: DeepLift, Rescale rule (Shrikumar et al. 2017), for ReLU networks: ReLUs
  (module, reused, in-place, functional) and max pooling are intercepted like guided
  backprop's; another activation is refused.
* ``occlusion``: a sliding patch set to a baseline (Zeiler & Fergus 2014), batched over
  (window, image) pairs.
* ``smoothgrad_sq`` / ``vargrad``: the mean square / the variance of the base map over the
  noisy copies of SmoothGrad (Hooker et al. 2019; Adebayo et al. 2018).
* ``gradcam``: Grad-CAM (Selvaraju et al. 2017, eq. 1-2) at a named layer (default: the
  last ``nn.Conv2d``), ReLU(sum_k alpha_k A^k), alpha_k the spatial mean of
  d f_t / dA^k, bilinearly upsampled to the input size and repeated over the input's
  channels (every channel holds the same map), so it has the input's shape too.
"""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from robustlens.errors import UserError
from robustlens.names import SALIENCY_METHODS
from robustlens.registry import Registry

METHODS: tuple[str, ...] = SALIENCY_METHODS  # the names of SALIENCY, registered below in this order
IG_METHODS: tuple[str, ...] = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")

Target = int | Sequence[int] | Tensor


# ----------------------------------------------------------------------------- checks


def check_images(images: Any, name: str = "images") -> Tensor:
    """``images`` must be a floating tensor (N, C, H, W) with N >= 1."""
    if not isinstance(images, Tensor):
        raise UserError(f"{name}: expected a float tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise UserError(f"{name}: expected a 4-D tensor (N, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise UserError(f"{name}: expected a floating tensor with values in [0, 1], got {images.dtype}")
    if images.shape[0] == 0:
        raise UserError(f"{name}: got an empty batch")
    return images


def num_classes_of(model: nn.Module, images: Tensor) -> int:
    """The number of logits ``model`` returns (``model.num_classes`` when it has one)."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    with torch.no_grad():
        return int(model(images[:1]).shape[1])


def check_target(model: nn.Module, images: Tensor, target: Target) -> Tensor:
    """``target`` (an int, a list or a tensor) as an int64 tensor (N,), each in range."""
    n = images.shape[0]
    if isinstance(target, bool):
        raise UserError(f"target: expected an int, a list of ints or a tensor, got {target!r}")
    if isinstance(target, (int, np.integer)):
        t = torch.full((n,), int(target), dtype=torch.long, device=images.device)
    else:
        try:
            t = torch.as_tensor(target, device=images.device)
        except (TypeError, ValueError, RuntimeError):
            raise UserError(f"target: expected an int, a list of ints or a tensor, got {target!r}") from None
        if t.is_floating_point() or t.dtype == torch.bool:
            raise UserError(f"target: expected integer class indices, got dtype {t.dtype}")
        t = t.long().reshape(-1)
        if t.numel() == 1 and n > 1:
            t = t.expand(n).clone()
        if t.numel() != n:
            raise UserError(f"target: {t.numel()} targets for {n} images")
    k = num_classes_of(model, images)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
        bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
        raise UserError(f"target: class {bad} out of range; the model has {k} classes (0..{k - 1})")
    return t


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) <= 0:
        raise UserError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` in ``dict(model.named_modules())``.

    An unknown name raises :class:`UserError` naming the closest valid names.
    """
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    valid = [k for k in modules if k]
    close = difflib.get_close_matches(str(name), valid, n=5, cutoff=0.4)
    hint = f"closest: {', '.join(close)}" if close else f"valid: {', '.join(valid[:30])}{' ...' if len(valid) > 30 else ''}"
    raise UserError(f"layer: no module named {name!r} in {type(model).__name__}; {hint}")


def last_conv_name(model: nn.Module) -> str:
    """Name of the last ``nn.Conv2d`` in definition order (Grad-CAM's default layer)."""
    names = [k for k, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise UserError(f"gradcam: {type(model).__name__} has no nn.Conv2d; pass layer=NAME")
    return names[-1]


@contextmanager
def capture(module: nn.Module) -> Iterator[list[Tensor]]:
    """Record the output of ``module`` on each forward call (a list, appended to).

    The hook hands a *clone* downstream, so an in-place op after the layer (e.g.
    ``ReLU(inplace=True)``) cannot overwrite the recorded activation, whose gradient
    then is the gradient of the layer's true output.
    """
    store: list[Tensor] = []

    def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
        if not isinstance(out, Tensor):
            raise UserError(f"layer {type(_m).__name__}: output is a {type(out).__name__}, not a tensor")
        store.append(out)
        return out.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


# ----------------------------------------------------------------------------- gradients


def _input_grad(model: nn.Module, x: Tensor, t: Tensor, objective: str) -> Tensor:
    """d objective / dx for one chunk; objective 'logit' (sum of target logits) or 'loss'."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        if objective == "logit":
            score = out.gather(1, t[:, None]).sum()
        else:
            score = F.cross_entropy(out, t, reduction="sum")
        (g,) = torch.autograd.grad(score, x)
    return g


def vanilla_gradient(model: nn.Module, images: Tensor, target: Target, internal_batch_size: int = 64) -> Tensor:
    """Vanilla gradient d f_t(x) / dx of the target logit (Simonyan et al. 2014; main paper eq. 7)."""
    x = check_images(images)
    t = check_target(model, x, target)
    b = _positive(internal_batch_size, "internal_batch_size")
    return torch.cat([_input_grad(model, x[s], t[s], "logit") for s in _chunks(len(x), b)])


def loss_gradient(model: nn.Module, images: Tensor, target: Target, internal_batch_size: int = 64) -> Tensor:
    """Loss gradient d CE(f(x), t) / dx (Tsipras et al. 2019; main paper eq. 8-9).

    Equals -(d f_t/dx) + sum_j softmax_j(x) d f_j/dx (main paper eq. 9).
    """
    x = check_images(images)
    t = check_target(model, x, target)
    b = _positive(internal_batch_size, "internal_batch_size")
    return torch.cat([_input_grad(model, x[s], t[s], "loss") for s in _chunks(len(x), b)])


# ----------------------------------------------------------------------------- guided backprop


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward is Springenberg et al.'s guided rule (main paper eq. 15):
    R_in = 1[x > 0] * 1[R_out > 0] * R_out."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0).to(grad.dtype)


class _GuidedReLUInplace(torch.autograd.Function):
    """In-place version (``F.relu(x, inplace=True)``, ``x.relu_()``): modifies and returns ``x``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        x.clamp_(min=0)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0).to(grad.dtype)


_RELU_OUT = {torch.relu, torch.Tensor.relu, F.relu}
_RELU_INPLACE = {torch.relu_, torch.Tensor.relu_, F.relu_}


class GuidedReLUMode(TorchFunctionMode):
    """A torch-function mode that replaces every ReLU call by the guided ReLU.

    Catches ``nn.ReLU`` (which calls ``F.relu``), ``F.relu`` / ``F.relu_``,
    ``torch.relu`` / ``torch.relu_`` and ``Tensor.relu`` / ``Tensor.relu_``, however the
    model's code refers to them (even a name bound at import time), because the
    interception happens in torch's own dispatch, not by patching attributes.
    """

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _RELU_OUT:
            inplace = bool(kwargs.get("inplace", args[1] if len(args) > 1 else False)) if func is F.relu else False
            return (_GuidedReLUInplace if inplace else _GuidedReLU).apply(args[0])
        if func in _RELU_INPLACE:
            return _GuidedReLUInplace.apply(args[0])
        return func(*args, **kwargs)


@contextmanager
def guided_relus() -> Iterator[None]:
    """Inside this context every ReLU of any model backpropagates by the guided rule."""
    with GuidedReLUMode():
        yield


def guided_backprop(model: nn.Module, images: Tensor, target: Target, internal_batch_size: int = 64) -> Tensor:
    """Guided backpropagation (Springenberg et al. 2015; main paper eq. 13-15) of the target logit.

    Works for ReLU modules, a reused module, in-place and functional ReLUs (see
    :class:`GuidedReLUMode`). Other non-linearities (GELU, ReLU6...) backpropagate as usual.
    """
    x = check_images(images)
    t = check_target(model, x, target)
    b = _positive(internal_batch_size, "internal_batch_size")
    out = []
    for s in _chunks(len(x), b):
        with guided_relus():
            out.append(_input_grad(model, x[s], t[s], "logit"))
    return torch.cat(out)


# ----------------------------------------------------------------------------- integrated gradients


def ig_quadrature(steps: int, method: str = "gausslegendre") -> tuple[list[float], list[float]]:
    """Nodes ``alphas`` in [0, 1] and weights for int_0^1 g(a) da ~ sum_k w_k g(a_k).

    * ``riemann_left`` / ``riemann_right`` / ``riemann_middle``: n equal cells of width 1/n,
      evaluated at their left ends, right ends or midpoints.
    * ``riemann_trapezoid``: the trapezoidal rule on n equally spaced nodes 0..1: weights
      1/(n-1), halved at both ends (they sum to 1). captum 0.9's "riemann_trapezoid" uses
      weights 1/n halved at the ends (summing to (n-1)/n), i.e. ours x (n-1)/n.
    * ``gausslegendre``: n-point Gauss-Legendre rule mapped from [-1, 1] to [0, 1].
    """
    steps = _positive(steps, "steps")
    if method not in IG_METHODS:
        raise UserError(f"method: unknown integration rule {method!r}; expected one of {', '.join(IG_METHODS)}")
    n = steps
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (0.5 * (nodes + 1)).tolist(), (0.5 * weights).tolist()
    if method == "riemann_trapezoid":
        if n < 2:
            raise UserError("steps: the trapezoidal rule needs at least 2 steps")
        alphas = np.linspace(0.0, 1.0, n)
        w = np.full(n, 1.0 / (n - 1))
        w[0] /= 2
        w[-1] /= 2
        return alphas.tolist(), w.tolist()
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    alphas = (np.arange(n) + offset) / n
    return alphas.tolist(), [1.0 / n] * n


def _baseline_like(x: Tensor, baseline: float | Tensor | None) -> Tensor:
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    if not isinstance(baseline, Tensor):
        raise UserError(f"baseline: expected None, a number or a tensor, got {type(baseline).__name__}")
    b = baseline.to(device=x.device, dtype=x.dtype)
    try:
        return torch.broadcast_to(b, x.shape)
    except RuntimeError:
        raise UserError(f"baseline: shape {tuple(b.shape)} does not broadcast to the images' {tuple(x.shape)}") from None


def _path_integral(
    model: nn.Module, x: Tensor, base: Tensor, t: Tensor, steps: int, method: str, b: int, grad_fn: Callable | None = None
) -> Tensor:
    """sum_k w_k d f_t(x' + a_k (x - x')) / dx, in chunks of ``b`` path points.

    Path point (k, i) (step k, image i) is row k * N + i of a virtual batch that is never
    materialised beyond one chunk.
    """
    alphas, weights = ig_quadrature(steps, method)
    n = x.shape[0]
    diff = x - base
    total = torch.zeros_like(x)
    a_all = torch.tensor(alphas, dtype=x.dtype, device=x.device)
    w_all = torch.tensor(weights, dtype=x.dtype, device=x.device)
    view = (-1,) + (1,) * (x.dim() - 1)
    for s in _chunks(steps * n, b):
        rows = torch.arange(s.start, s.stop, device=x.device)
        k, i = rows // n, rows % n
        pts = base[i] + a_all[k].view(view) * diff[i]
        g = grad_fn(pts, t[i]) if grad_fn is not None else _input_grad(model, pts, t[i], "logit")
        total.index_add_(0, i, g * w_all[k].view(view))
    return total


def _target_logit(model: nn.Module, x: Tensor, t: Tensor, b: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[s]).gather(1, t[s, None])[:, 0] for s in _chunks(len(x), b)])


def integrated_gradients(
    model: nn.Module,
    images: Tensor,
    target: Target,
    baseline: float | Tensor | None = None,
    steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int = 64,
    return_delta: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Integrated gradients (Sundararajan et al. 2017, eq. 1; main paper eq. 17).

    IG_i(x) = (x_i - x'_i) * int_0^1 d f_t(x' + a (x - x')) / dx_i da, the integral taken
    with ``method`` (see :func:`ig_quadrature`) at ``steps`` nodes; baseline x' = 0 (black)
    by default. With ``return_delta`` also returns the convergence delta per image,
    sum_i IG_i(x) - (f_t(x) - f_t(x')) (completeness, Sundararajan et al. Prop. 1).
    """
    x = check_images(images)
    t = check_target(model, x, target)
    b = _positive(internal_batch_size, "internal_batch_size")
    base = _baseline_like(x, baseline)
    avg = _path_integral(model, x, base, t, steps, method, b)
    attr = (x - base) * avg
    if not return_delta:
        return attr
    delta = attr.flatten(1).sum(1) - (_target_logit(model, x, t, b) - _target_logit(model, base, t, b))
    return attr, delta


def ig_path_average(
    model: nn.Module,
    images: Tensor,
    target: Target,
    baseline: float | Tensor | None = None,
    steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int = 64,
) -> Tensor:
    """The main paper authors' "integrated gradients": the path-averaged gradient
    int_0^1 d f_t(x' + a (x - x')) / dx da alone, *not* multiplied by (x - x').

    Not an attribution in Sundararajan et al.'s sense (no completeness); offered to
    reproduce the paper's figures.
    """
    x = check_images(images)
    t = check_target(model, x, target)
    b = _positive(internal_batch_size, "internal_batch_size")
    return _path_integral(model, x, _baseline_like(x, baseline), t, steps, method, b)


# ----------------------------------------------------------------------------- Grad-CAM


def grad_cam(
    model: nn.Module,
    images: Tensor,
    target: Target,
    layer: str | None = None,
    internal_batch_size: int = 64,
    relu: bool = True,
    upsample: bool = True,
) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017, eq. 1-2) at ``layer`` (default: the last conv).

    L = ReLU(sum_k alpha_k A^k) with alpha_k = mean_{ij} d f_t / dA^k_ij. The map is
    upsampled bilinearly (align_corners=False) to the input's H x W and repeated over the
    input's C channels, so the result has the input's shape. ``upsample=False`` returns
    the raw (N, 1, h, w) map at the layer's resolution.
    """
    x = check_images(images)
    t = check_target(model, x, target)
    b = _positive(internal_batch_size, "internal_batch_size")
    name = layer if layer is not None else last_conv_name(model)
    module = find_layer(model, name)
    maps = []
    for s in _chunks(len(x), b):
        with capture(module) as acts, torch.enable_grad():
            # the input requires grad so the layer's output is in the graph even when the
            # model's parameters are frozen (requires_grad=False)
            out = model(x[s].detach().requires_grad_(True))
            if len(acts) != 1:
                raise UserError(f"gradcam: layer {name!r} ran {len(acts)} times in one forward pass; pick a layer used once")
            a = acts[0]
            if a.dim() != 4:
                raise UserError(f"gradcam: layer {name!r} outputs shape {tuple(a.shape)}; expected (N, K, h, w)")
            (g,) = torch.autograd.grad(out.gather(1, t[s, None]).sum(), a)
        cam = (g.mean(dim=(2, 3), keepdim=True) * a.detach()).sum(1, keepdim=True)
        maps.append(cam.clamp(min=0) if relu else cam)
    cam = torch.cat(maps)
    if not upsample:
        return cam
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)
    return cam.expand(-1, x.shape[1], -1, -1).contiguous()


# ----------------------------------------------------------------------------- SmoothGrad


class _NoiseSamples:
    """Standard normal draws e_s of the images' shape, s = 0 .. n-1, for noisy copies.

    From ``noise`` (n, N, C, H, W) when given, else drawn from ``generator`` as one
    ``torch.randn`` of the images' shape per sample, s = 0, 1, ... (so the draws do not
    depend on the chunking); one sample is kept at a time, so memory stays at one image batch.
    """

    def __init__(self, x: Tensor, n: int, noise: Tensor | None, generator: torch.Generator | None, name: str = "noise") -> None:
        if noise is not None and tuple(noise.shape) != (n, *x.shape):
            raise UserError(f"{name}: expected shape {(n, *x.shape)}, got {tuple(noise.shape)}")
        self.x, self.noise, self.generator = x, noise, generator
        self._cached: tuple[int, Tensor] | None = None

    def sample(self, s: int) -> Tensor:
        if self._cached is None or self._cached[0] != s:
            x = self.x
            e = self.noise[s].to(x) if self.noise is not None else torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)
            self._cached = (s, e)
        return self._cached[1]

    def rows(self, ch: slice) -> tuple[Tensor, Tensor]:
        """``(image index, noise)`` of the virtual rows ``ch`` (row = s * N + i)."""
        n = self.x.shape[0]
        idx = torch.arange(ch.start, ch.stop, device=self.x.device) % n
        parts, start = [], ch.start
        while start < ch.stop:  # consecutive rows of one noise sample at a time
            s, i0 = divmod(start, n)
            i1 = min(n, i0 + ch.stop - start)
            parts.append(self.sample(s)[i0:i1])
            start += i1 - i0
        return idx, torch.cat(parts)


_NOISE_METHODS = ("smoothgrad", "smoothgrad_sq", "vargrad", "gradient_shap")


def _sigma(x: Tensor, noise_level: Any) -> Tensor:
    """sigma = noise_level x (max(x) - min(x)) per image, shaped for broadcasting."""
    if isinstance(noise_level, bool) or not (isinstance(noise_level, (int, float)) and noise_level >= 0):
        raise UserError(f"noise_level: expected a number >= 0, got {noise_level!r}")
    flat = x.flatten(1)
    return (noise_level * (flat.max(1).values - flat.min(1).values)).view(-1, *([1] * (x.dim() - 1)))


def _noisy_moments(
    model: nn.Module, x: Tensor, t: Tensor, base: str, n_samples: int, sigma: Tensor, draws: _NoiseSamples, b: int, base_opts: dict
) -> tuple[Tensor, Tensor]:
    """The mean of base(x + sigma e_s) and of its square over the samples, in chunks of ``b`` rows."""
    if base not in METHODS or base in _NOISE_METHODS:
        raise UserError(f"base: expected one of {', '.join(m for m in METHODS if m not in _NOISE_METHODS)}, got {base!r}")
    fn = SALIENCY.get(base)
    total, total_sq = torch.zeros_like(x), torch.zeros_like(x)
    for ch in _chunks(n_samples * x.shape[0], b):
        idx, e = draws.rows(ch)
        m = fn(model, x[idx] + sigma[idx] * e, t[idx], internal_batch_size=b, **base_opts)
        if isinstance(m, tuple):
            m = m[0]
        total.index_add_(0, idx, m)
        total_sq.index_add_(0, idx, m * m)
    return total / n_samples, total_sq / n_samples


def smoothgrad(
    model: nn.Module,
    images: Tensor,
    target: Target,
    base: str = "vanilla",
    n_samples: int = 50,
    noise_level: float = 0.2,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    squared: bool = False,
    internal_batch_size: int = 64,
    **base_opts: Any,
) -> Tensor:
    """SmoothGrad (Smilkov et al. 2017, eq. 3; main paper eq. 16) over any base method.

    M(x) = 1/n sum_s base(x + e_s), e_s ~ N(0, sigma^2 I), sigma = ``noise_level`` x
    (max(x) - min(x)) per image, as in the authors' code (``stdev_spread`` 0.2 and
    50 samples by default). ``squared=True`` averages base(.)^2 (SmoothGrad-Squared).

    Noise is reproducible: pass ``noise`` (n_samples, N, C, H, W) of standard normal
    draws (scaled by sigma here), or a ``generator``; sample s is drawn as one
    ``torch.randn`` of the images' shape, s = 0, 1, ..., whatever ``internal_batch_size``.
    The n x N noisy copies go through the base method in chunks of ``internal_batch_size``.
    """
    x = check_images(images)
    t = check_target(model, x, target)
    n_samples = _positive(n_samples, "n_samples")
    b = _positive(internal_batch_size, "internal_batch_size")
    draws = _NoiseSamples(x, n_samples, noise, generator)
    mean, mean_sq = _noisy_moments(model, x, t, base, n_samples, _sigma(x, noise_level), draws, b, base_opts)
    return mean_sq if squared else mean


def smoothgrad_sq(
    model: nn.Module, images: Tensor, target: Target, base: str = "vanilla", n_samples: int = 50, noise_level: float = 0.2,
    noise: Tensor | None = None, generator: torch.Generator | None = None, internal_batch_size: int = 64, **base_opts: Any,
) -> Tensor:
    """SmoothGrad-Squared (Hooker et al. 2019, Sec. 3): 1/n sum_s base(x + e_s)^2, the noise as in :func:`smoothgrad`."""
    return smoothgrad(model, images, target, base, n_samples, noise_level, noise, generator, True, internal_batch_size, **base_opts)


def vargrad(
    model: nn.Module, images: Tensor, target: Target, base: str = "vanilla", n_samples: int = 50, noise_level: float = 0.2,
    noise: Tensor | None = None, generator: torch.Generator | None = None, internal_batch_size: int = 64, **base_opts: Any,
) -> Tensor:
    """VarGrad (Adebayo et al. 2018b; Hooker et al. 2019, Sec. 3): the variance over the noisy
    copies, 1/n sum_s base(x + e_s)^2 - (1/n sum_s base(x + e_s))^2, the noise as in
    :func:`smoothgrad` (captum's NoiseTunnel ``vargrad``: the population variance)."""
    x = check_images(images)
    t = check_target(model, x, target)
    n_samples = _positive(n_samples, "n_samples")
    b = _positive(internal_batch_size, "internal_batch_size")
    draws = _NoiseSamples(x, n_samples, noise, generator)
    mean, mean_sq = _noisy_moments(model, x, t, base, n_samples, _sigma(x, noise_level), draws, b, base_opts)
    return mean_sq - mean * mean


# ----------------------------------------------------------------------------- input x gradient, GradientSHAP


def input_x_gradient(model: nn.Module, images: Tensor, target: Target, internal_batch_size: int = 64) -> Tensor:
    """Input x gradient, x * d f_t(x) / dx (Shrikumar et al. 2016; Ancona et al. 2018, Sec. 2.1)."""
    return check_images(images) * vanilla_gradient(model, images, target, internal_batch_size)


def _baseline_set(x: Tensor, baselines: float | Tensor | None) -> Tensor:
    """The reference distribution of GradientSHAP as a (K, C, H, W) tensor (None: one black image)."""
    if baselines is None or isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
        return torch.full((1, *x.shape[1:]), float(baselines or 0.0), dtype=x.dtype, device=x.device)
    if not isinstance(baselines, Tensor):
        raise UserError(f"baselines: expected None, a number or a tensor (K, C, H, W), got {type(baselines).__name__}")
    b = baselines.to(device=x.device, dtype=x.dtype)
    b = b[None] if b.dim() == 3 else b
    if b.dim() != 4 or tuple(b.shape[1:]) != tuple(x.shape[1:]) or b.shape[0] == 0:
        raise UserError(f"baselines: expected a tensor (K, {', '.join(map(str, x.shape[1:]))}), got shape {tuple(baselines.shape)}")
    return b


def gradient_shap(
    model: nn.Module,
    images: Tensor,
    target: Target,
    baselines: float | Tensor | None = None,
    n_samples: int = 20,
    stdev: float = 0.0,
    generator: torch.Generator | None = None,
    draws: tuple[Tensor, Tensor, Tensor | None] | None = None,
    internal_batch_size: int = 64,
) -> Tensor:
    """GradientSHAP (Lundberg & Lee 2017, Sec. 4 "expected gradients"; captum's GradientShap).

    phi(x) = 1/n sum_s (x + e_s - x'_s) * d f_t(x'_s + a_s (x + e_s - x'_s)) / dx, with
    x'_s drawn uniformly from ``baselines`` (a (K, C, H, W) distribution; a number or
    None = one constant image, black by default), a_s ~ U(0, 1) and e_s ~ N(0, stdev^2 I).

    Random draws: ``draws = (index (n, N) long, alpha (n, N), noise (n, N, C, H, W) or
    None)`` (standard normal noise, scaled by ``stdev`` here), or else from ``generator``:
    first the baseline indices, then the alphas, then one ``torch.randn`` of the images'
    shape per sample. The n x N points go through the model in chunks of ``internal_batch_size``.
    """
    x = check_images(images)
    t = check_target(model, x, target)
    n_samples = _positive(n_samples, "n_samples")
    b = _positive(internal_batch_size, "internal_batch_size")
    if isinstance(stdev, bool) or not isinstance(stdev, (int, float)) or stdev < 0:
        raise UserError(f"stdev: expected a number >= 0, got {stdev!r}")
    refs = _baseline_set(x, baselines)
    n = x.shape[0]
    if draws is None:
        index = torch.randint(len(refs), (n_samples, n), generator=generator).to(x.device)
        alpha = torch.rand((n_samples, n), generator=generator, dtype=x.dtype).to(x.device)
        noise = None
    else:
        index, alpha, noise = draws
        if tuple(index.shape) != (n_samples, n) or tuple(alpha.shape) != (n_samples, n):
            raise UserError(f"draws: index and alpha must have shape {(n_samples, n)}, got {tuple(index.shape)} and {tuple(alpha.shape)}")
        index, alpha = index.long().to(x.device).flatten(), alpha.to(x).flatten()
    index, alpha = index.flatten(), alpha.flatten()
    samples = _NoiseSamples(x, n_samples, noise, generator, name="draws (noise)") if stdev > 0 else None
    view = (-1,) + (1,) * (x.dim() - 1)
    total = torch.zeros_like(x)
    for ch in _chunks(n_samples * n, b):
        i = torch.arange(ch.start, ch.stop, device=x.device) % n
        xs = x[i] + stdev * samples.rows(ch)[1] if samples is not None else x[i]
        ref = refs[index[ch]]
        diff = xs - ref
        total.index_add_(0, i, diff * _input_grad(model, ref + alpha[ch].view(view) * diff, t[i], "logit"))
    return total / n_samples


# ----------------------------------------------------------------------------- DeepLift (Rescale)


_DL_EPS = 1e-10  # |x - x'| below this: the gradient stands in for the multiplier (captum's eps)


def _halves(v: Tensor) -> tuple[Tensor, Tensor]:
    n = v.shape[0] // 2
    return v[:n], v[n:]


def _rescale_multiplier(grad: Tensor, z: Tensor, out: Tensor) -> Tensor:
    """Rescale rule (Shrikumar et al. 2017, eq. 3 / Sec. 3.3): m = Delta out / Delta in at a
    ReLU, shared by the input rows and their reference rows; the gradient where |Delta in| < eps."""
    (zx, zr), (ox, orf) = _halves(z), _halves(out)
    din, dout = torch.cat([zx - zr] * 2), torch.cat([ox - orf] * 2)
    small = din.abs() < _DL_EPS
    return torch.where(small, grad * (z > 0).to(grad.dtype), grad * dout / torch.where(small, torch.ones_like(din), din))


class _RescaleReLU(torch.autograd.Function):
    """ReLU on the stacked batch [x; x'] whose backward is the Rescale rule."""

    @staticmethod
    def forward(ctx: Any, z: Tensor) -> Tensor:  # type: ignore[override]
        out = z.clamp(min=0)
        ctx.save_for_backward(z, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        z, out = ctx.saved_tensors
        return _rescale_multiplier(grad, z, out)


class _RescaleReLUInplace(torch.autograd.Function):
    """In-place version (``F.relu(x, inplace=True)``, ``x.relu_()``): modifies and returns ``x``."""

    @staticmethod
    def forward(ctx: Any, z: Tensor) -> Tensor:  # type: ignore[override]
        ctx.z = z.detach().clone()
        z.clamp_(min=0)
        ctx.mark_dirty(z)
        ctx.save_for_backward(z)
        return z

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        return _rescale_multiplier(grad, ctx.z, out)


def _unpool(v: Tensor, idx: Tensor, shape: torch.Size) -> Tensor:
    """Scatter ``v`` (N, C, h, w) back to the argmax positions ``idx`` of an (N, C, H, W) input (summing repeats)."""
    flat = torch.zeros(shape[0], shape[1], shape[2] * shape[3], dtype=v.dtype, device=v.device)
    return flat.scatter_add_(2, idx.flatten(2), v.flatten(2)).view(shape)


class _RescaleMaxPool(torch.autograd.Function):
    """2-D max pooling with DeepLift's rule for a max (captum's ``maxpool``): Delta out is split
    between the argmax of the input (max(o, o') - o') and that of the reference (o - max(o, o')),
    then divided by Delta in; the gradient where |Delta in| < eps."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, kwargs: dict) -> Tensor:  # type: ignore[override]
        out, idx = F.max_pool2d(z, **kwargs, return_indices=True)
        ctx.save_for_backward(z, out, idx)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        z, out, idx = ctx.saved_tensors
        (zx, zr), (ox, orf), (ix, ir) = _halves(z), _halves(out), _halves(idx)
        gx, gr = _halves(grad)
        top = torch.max(ox, orf)
        num = _unpool(gx * (top - orf), ix, zx.shape) + _unpool(gr * (ox - top), ir, zr.shape)
        din, num = torch.cat([zx - zr] * 2), torch.cat([num] * 2)
        small = din.abs() < _DL_EPS
        return torch.where(small, _unpool(grad, idx, z.shape), num / torch.where(small, torch.ones_like(din), din)), None


_MAXPOOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")


def _non_relu_functions() -> dict[Callable, str]:
    """Non-linearities DeepLift's Rescale rule is not implemented for here (by torch name)."""
    names = ["gelu", "silu", "elu", "elu_", "leaky_relu", "leaky_relu_", "softplus", "hardtanh", "hardtanh_", "relu6",
             "hardswish", "hardsigmoid", "mish", "selu", "celu", "sigmoid", "tanh", "softmax", "log_softmax", "logsigmoid",
             "softsign", "tanhshrink", "glu", "prelu", "rrelu", "threshold", "max_pool1d", "max_pool3d",
             "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "fractional_max_pool2d"]
    out: dict[Callable, str] = {}
    for owner in (F, torch, torch.Tensor):
        for name in names:
            fn = getattr(owner, name, None)  # torch's namespaces, not ours
            if fn is not None:
                out[fn] = name
    return out


class DeepLiftMode(TorchFunctionMode):
    """A torch-function mode for DeepLift on the stacked batch [x; x']: every ReLU (module,
    reused, in-place or functional, as in :class:`GuidedReLUMode`) and 2-D max pooling
    backpropagate by the Rescale rule; any other non-linearity is refused with a UserError."""

    refused = _non_relu_functions()

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _RELU_OUT:
            inplace = bool(kwargs.get("inplace", args[1] if len(args) > 1 else False)) if func is F.relu else False
            return (_RescaleReLUInplace if inplace else _RescaleReLU).apply(args[0])
        if func in _RELU_INPLACE:
            return _RescaleReLUInplace.apply(args[0])
        if func is F.max_pool2d:
            opts = {**dict(zip(_MAXPOOL_ARGS, args[1:6])), **{k: v for k, v in kwargs.items() if k != "return_indices"}}
            if kwargs.get("return_indices") or len(args) > 6 and args[6]:
                raise UserError("deeplift: max_pool2d with return_indices=True is not supported")
            return _RescaleMaxPool.apply(args[0], opts)
        if func in self.refused:
            raise UserError(f"deeplift: the model uses {self.refused[func]}; the Rescale rule here supports ReLU networks "
                            "(ReLU, 2-D max pooling, linear layers) only: use another method for this model")
        return func(*args, **kwargs)


def deeplift(
    model: nn.Module, images: Tensor, target: Target, baseline: float | Tensor | None = None, internal_batch_size: int = 64
) -> Tensor:
    """DeepLift with the Rescale rule (Shrikumar et al. 2017, Sec. 3.3-3.5) for ReLU networks.

    phi(x) = (x - x') * m(x, x'), m the multipliers backpropagated with m = Delta out /
    Delta in at every ReLU and DeepLift's max rule at 2-D max pooling (linear layers:
    their weights); baseline x' = 0 (black) by default. Summation to delta holds:
    sum_i phi_i = f_t(x) - f_t(x') (Shrikumar et al. eq. 1). The input and its reference go
    through the model as one stacked batch of 2 x ``internal_batch_size`` rows (captum's
    layout); ReLUs are intercepted as in :class:`GuidedReLUMode` (modules, a reused module,
    in-place and functional ReLUs). Another activation (GELU, sigmoid, ...) is refused.
    """
    x = check_images(images)
    t = check_target(model, x, target)
    b = _positive(internal_batch_size, "internal_batch_size")
    base = _baseline_like(x, baseline)
    out = []
    for s in _chunks(len(x), b):
        xs = x[s].detach().requires_grad_(True)
        with DeepLiftMode(), torch.enable_grad():
            logits = model(torch.cat([xs, base[s].detach()]))
            score = logits.gather(1, torch.cat([t[s], t[s]])[:, None]).sum()
            (g,) = torch.autograd.grad(score, xs)
        out.append((x[s] - base[s]) * g)
    return torch.cat(out)


# ----------------------------------------------------------------------------- occlusion


def _window_starts(size: int, k: int, stride: int) -> list[int]:
    """Captum's window positions along one side: 0, s, 2s, ... ceil((size - k) / s) windows
    past the first, the last one clipped at the border."""
    return [i * stride for i in range(int(np.ceil((size - k) / stride)) + 1)]


def occlusion(
    model: nn.Module,
    images: Tensor,
    target: Target,
    patch: int = 4,
    stride: int | None = None,
    baseline: float | Tensor | None = None,
    internal_batch_size: int = 64,
) -> Tensor:
    """Occlusion (Zeiler & Fergus 2014, Sec. 4.2; captum's Occlusion): a ``patch`` x ``patch``
    window (all channels) slides with ``stride`` (default ``patch``); each pixel gets the mean,
    over the windows covering it, of f_t(x) - f_t(x with the window set to ``baseline``)
    (default 0). The (window, image) pairs go through the model in chunks of
    ``internal_batch_size``."""
    x = check_images(images)
    t = check_target(model, x, target)
    b = _positive(internal_batch_size, "internal_batch_size")
    k = _positive(patch, "patch")
    st = _positive(stride if stride is not None else k, "stride")
    h, w = x.shape[2:]
    if k > h or k > w:
        raise UserError(f"patch: a {k} x {k} patch is larger than the {h} x {w} image")
    base = _baseline_like(x, baseline)
    tops = torch.tensor([(r, c) for r in _window_starts(h, k, st) for c in _window_starts(w, k, st)], device=x.device)
    rr, cc = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    n = x.shape[0]
    clean = _target_logit(model, x, t, b)
    total, count = torch.zeros_like(x[:, :1]), torch.zeros_like(x[:, :1])
    for ch in _chunks(len(tops) * n, b):
        rows = torch.arange(ch.start, ch.stop, device=x.device)
        p, i = rows // n, rows % n
        r0, c0 = tops[p, 0].view(-1, 1, 1), tops[p, 1].view(-1, 1, 1)
        mask = ((rr.view(1, -1, 1) >= r0) & (rr.view(1, -1, 1) < r0 + k) & (cc.view(1, 1, -1) >= c0) & (cc.view(1, 1, -1) < c0 + k))
        mask = mask[:, None].to(x.dtype)
        with torch.no_grad():
            drop = clean[i] - model(x[i] * (1 - mask) + base[i] * mask).gather(1, t[i, None])[:, 0]
        total.index_add_(0, i, drop.view(-1, 1, 1, 1) * mask)
        count.index_add_(0, i, mask)
    return (total / count).expand_as(x).contiguous()


# name -> the method's function, one signature: f(model, images, target, internal_batch_size=..., **opts)
SALIENCY: Registry[Callable[..., Any]] = Registry("saliency method", key="method")
SALIENCY.add("vanilla", vanilla_gradient, "gradient of the target logit (Simonyan et al. 2014)")
SALIENCY.add("loss", loss_gradient, "gradient of the cross-entropy loss (Tsipras et al. 2019)")
SALIENCY.add("guided", guided_backprop, "guided backpropagation (Springenberg et al. 2015)")
SALIENCY.add("smoothgrad", smoothgrad, "SmoothGrad over any base method (Smilkov et al. 2017)")
SALIENCY.add("ig", integrated_gradients, "integrated gradients (Sundararajan et al. 2017)")
SALIENCY.add("ig_path_average", ig_path_average, "the path-averaged gradient, not multiplied by (x - x')")
SALIENCY.add("gradcam", grad_cam, "Grad-CAM at a named layer (Selvaraju et al. 2017)")
SALIENCY.add("input_x_gradient", input_x_gradient, "input x gradient (Shrikumar et al. 2016)")
SALIENCY.add("gradient_shap", gradient_shap, "GradientSHAP / expected gradients (Lundberg & Lee 2017)")
SALIENCY.add("deeplift", deeplift, "DeepLift, Rescale rule, ReLU networks (Shrikumar et al. 2017)")
SALIENCY.add("occlusion", occlusion, "occlusion by a sliding patch (Zeiler & Fergus 2014)")
SALIENCY.add("smoothgrad_sq", smoothgrad_sq, "SmoothGrad-Squared (Hooker et al. 2019)")
SALIENCY.add("vargrad", vargrad, "VarGrad: variance over noisy copies (Adebayo et al. 2018)")


def saliency(
    model: nn.Module,
    images: Tensor,
    target: Target,
    method: str = "vanilla",
    internal_batch_size: int = 64,
    **opts: Any,
) -> Tensor:
    """Saliency maps of ``method`` (one of :data:`METHODS`), shape of ``images``.

    ``opts`` go to the method's function (:func:`integrated_gradients`: baseline, steps,
    method; :func:`smoothgrad`: base, n_samples, noise_level, noise, generator, squared;
    :func:`grad_cam`: layer). ``return_delta`` is not accepted here (use
    :func:`integrated_gradients`), so the result is always one tensor.
    """
    fn = SALIENCY.get(method)  # an unknown name: the close-match error
    if opts.get("return_delta"):
        raise UserError("return_delta: call integrated_gradients(...) directly to get the convergence delta")
    opts.pop("return_delta", None)
    try:
        return fn(model, images, target, internal_batch_size=internal_batch_size, **opts)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise UserError(f"{method}: {e}") from None
        raise


__all__ = [
    "IG_METHODS",
    "METHODS",
    "SALIENCY",
    "DeepLiftMode",
    "GuidedReLUMode",
    "capture",
    "check_images",
    "deeplift",
    "gradient_shap",
    "input_x_gradient",
    "occlusion",
    "smoothgrad_sq",
    "vargrad",
    "check_target",
    "find_layer",
    "grad_cam",
    "guided_backprop",
    "guided_relus",
    "ig_path_average",
    "ig_quadrature",
    "integrated_gradients",
    "last_conv_name",
    "loss_gradient",
    "saliency",
    "smoothgrad",
    "vanilla_gradient",
]
