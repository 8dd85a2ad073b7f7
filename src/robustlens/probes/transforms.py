"""Input transformations that take information away from images (probes).

Itazuri et al. (2019), Sec. 4.1: Gaussian blur over a sigma grid at a fixed kernel size,
a median filter applied 1..N times, colour reversal and stylisation; Chen et al. (2020):
silhouettes, edge maps and stylised (texture-less) images; plus greyscale and Fourier
low-/high-pass filters. Every transformation takes float images in [0, 1], NCHW (CPU or
CUDA), batched, and returns a tensor of the same shape on the same device.

Each one is registered as a named :class:`Probe` with a default level grid (``PROBES``,
:func:`get_probe`). Conventions (documented once, here):

* **blur**: a Gaussian of standard deviation ``sigma`` truncated to a fixed ``kernel_size``
  (default 7), normalised to sum 1, separable, with *reflect* padding in the torch / kornia /
  OpenCV ``BORDER_REFLECT_101`` sense (``d c b | a b c d``; scipy calls it ``'mirror'``).
  ``sigma = 0`` is the identity. On CPU the work is done by ``scipy.ndimage.gaussian_filter``
  (4-6x faster than a torch convolution on a small CPU, see BENCHMARKS.md) with ``truncate``
  chosen so that its radius equals ``kernel_size // 2``; on CUDA by a separable torch
  convolution. Both give the same numbers (tests: < 1e-5 against scipy and kornia).
* **median**: median of the ``k x k`` neighbourhood, applied ``repeats`` times, border mode
  ``'nearest'`` (replicate padding; scipy's ``mode='nearest'``) by default; ``'reflect'``
  (scipy's, ``d c b a | a b c d``) and ``'mirror'`` are available too. It equals
  ``scipy.ndimage.median_filter(x, size=(1, 1, k, k), mode=mode)`` exactly. For ``k = 3``
  the median of each window is computed with the exact column-sort network (sort each
  vertical triple once; median = med3(max of lows, med3 of middles, min of highs); Paeth 1990,
  "Median finding on a 3x3 grid", Graphics Gems), 8 min/max passes over the image per
  application instead of a sort of nine values per pixel; other sizes sort unfolded patches.
* **invert**: colour reversal ``1 - x``, per channel (on 1-channel images: intensity reversal).
* **greyscale**: ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` copied to every channel.
  On 1-channel images it is the identity; the probe declares ``needs_colour`` and
  :meth:`Probe.skip_reason` says "the data is already greyscale", so a study reports it as
  skipped rather than as a drop of 0.
* **lowpass / highpass**: per channel in the Fourier domain. The radius is measured in units
  of the Nyquist frequency along an axis (``r = sqrt(fx^2 + fy^2) / 0.5`` with frequencies in
  cycles per pixel), so the same grid fits every image size. ``mask='ideal'`` keeps
  ``r <= radius`` (low-pass) or ``r >= radius`` (high-pass); ``mask='gaussian'`` multiplies by
  ``exp(-r^2 / (2 radius^2))`` or one minus it. The high-pass keeps the DC term (the mean
  colour), so the result stays an image around the original mean. Trivial radii leave the
  image unchanged: low-pass at ``radius >= sqrt(2)`` (ideal) / ``inf``, high-pass at ``0``.
  Outputs are clipped to [0, 1].
* **silhouette**: the filled foreground mask, black shape on white (needs masks).
* **edges**: the mask's outline (mask minus its 4-neighbour erosion), black on white, where
  masks exist; otherwise a Sobel gradient magnitude of the (Gaussian, sigma 1) smoothed
  luma, scaled per image to its maximum, drawn black on white (``1 - magnitude``).
* Both take ``polarity``: ``"dark"`` (the default: dark shape / lines on white, as Geirhos et
  al. and Chen et al. draw them) or ``"light"`` (white on black, the inverse image). Data whose
  objects sit on a dark background (the procedural set) read the light version as closer to
  what they were trained on; evaluating both separates "cannot use shape" from "never saw a
  white background".
* **stylize**: (a) weight-free amplitude swap: the Fourier phase of the image with the
  Fourier amplitude of a style image drawn (seeded) from a pool, per channel, clipped to
  [0, 1]; (b) ``method='adain'``: AdaIN style transfer (Huang & Belongie 2017) with the
  public encoder/decoder weights, see :mod:`robustlens.probes.adain` (1-channel images go
  through the RGB network as grey RGB and come back as the output's luma).

Every other probe works per channel or on the luma, so 1-channel (greyscale) images keep
their shape under each of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustlens.errors import UserError
from robustlens.registry import Registry

BORDER_MODES = ("nearest", "reflect", "mirror")


# ---------------------------------------------------------------------------- checks
def _check_images(x: Tensor, what: str = "images") -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise UserError(f"{what}: expected a float tensor (N, C, H, W), got {shape}")
    if not x.is_floating_point():
        raise UserError(f"{what}: expected float images in [0, 1], got dtype {x.dtype}")


def _check_kernel(k: Any, name: str = "kernel_size") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0 or k % 2 == 0:
        raise UserError(f"{name}: expected a positive odd integer, got {k!r}")
    return int(k)


def _check_mode(mode: str) -> str:
    if mode not in BORDER_MODES:
        raise UserError(f"mode: unknown border mode {mode!r}; expected one of {', '.join(BORDER_MODES)}")
    return mode


# ---------------------------------------------------------------------------- padding
def _pad_index(n: int, p: int, mode: str, device: torch.device) -> Tensor:
    """Indices into a length-``n`` axis after padding ``p`` on each side, scipy's mode names."""
    np_mode = {"nearest": "edge", "reflect": "symmetric", "mirror": "reflect"}[mode]
    idx = np.arange(n)
    if mode == "mirror" and n == 1:
        np_mode = "edge"
    return torch.as_tensor(np.pad(idx, p, mode=np_mode), device=device)


def pad2d(x: Tensor, p: int, mode: str = "nearest") -> Tensor:
    """Pad the last two axes by ``p`` with a scipy border ``mode`` (nearest, reflect, mirror)."""
    if p == 0:
        return x
    _check_mode(mode)
    h, w = x.shape[-2:]
    if mode == "nearest":
        return F.pad(x, (p, p, p, p), mode="replicate")
    if mode == "mirror" and p < h and p < w:
        return F.pad(x, (p, p, p, p), mode="reflect")
    ih = _pad_index(h, p, mode, x.device)
    iw = _pad_index(w, p, mode, x.device)
    return x.index_select(-2, ih).index_select(-1, iw)


# ---------------------------------------------------------------------------- blur
def gaussian_kernel1d(sigma: float, kernel_size: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Normalised 1-D Gaussian taps ``exp(-x^2 / (2 sigma^2))`` for ``x = -r..r``."""
    r = kernel_size // 2
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(x: Tensor, sigma: float, kernel_size: int = 7, backend: str = "auto") -> Tensor:
    """Gaussian blur with a fixed ``kernel_size`` and reflect padding (see module docstring).

    ``backend``: ``'auto'`` (scipy on CPU, torch elsewhere), ``'scipy'`` or ``'torch'``.
    """
    _check_images(x)
    kernel_size = _check_kernel(kernel_size)
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise UserError(f"sigma: expected a non-negative number, got {sigma!r}")
    if backend not in ("auto", "scipy", "torch"):
        raise UserError(f"backend: expected auto, scipy or torch, got {backend!r}")
    r = kernel_size // 2
    if sigma == 0 or r == 0:
        return x.clone()
    if backend == "auto":
        backend = "scipy" if x.device.type == "cpu" else "torch"
    if r >= min(x.shape[-2:]):
        backend = "scipy"  # torch's reflect pad needs pad < size; scipy's mirror handles any size
    if backend == "scipy":
        from scipy.ndimage import gaussian_filter

        arr = x.detach().cpu().numpy()
        # radius = int(truncate * sigma + 0.5) == r; the tiny offset guards against rounding down.
        out = gaussian_filter(arr, sigma=(0, 0, sigma, sigma), mode="mirror", truncate=(r + 0.25) / sigma)
        return torch.from_numpy(out).to(x.device, x.dtype)
    k = gaussian_kernel1d(sigma, kernel_size, x.dtype).to(x.device)
    n, c, h, w = x.shape
    y = F.pad(x.reshape(n * c, 1, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return y.reshape(n, c, h, w)


# ---------------------------------------------------------------------------- median
def _med3(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Elementwise median of three: ``max(min(a, b), min(max(a, b), c))``."""
    return torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))


def _median3x3(x: Tensor, mode: str) -> Tensor:
    """Exact 3x3 median by the column-sort network (Paeth 1990)."""
    p = pad2d(x, 1, mode)
    a, b, c = p[:, :, :-2], p[:, :, 1:-1], p[:, :, 2:]  # vertical triples, (N, C, H, W+2)
    lo = torch.minimum(a, b)
    hi = torch.maximum(a, b)
    mid = torch.minimum(hi, c)
    hi = torch.maximum(hi, c)
    lo, mid = torch.minimum(lo, mid), torch.maximum(lo, mid)
    # the window median is med3(max of the lows, median of the middles, min of the highs)
    lo_max = torch.maximum(torch.maximum(lo[..., :-2], lo[..., 1:-1]), lo[..., 2:])
    hi_min = torch.minimum(torch.minimum(hi[..., :-2], hi[..., 1:-1]), hi[..., 2:])
    mid_med = _med3(mid[..., :-2], mid[..., 1:-1], mid[..., 2:])
    return _med3(lo_max, mid_med, hi_min)


def _median_unfold(x: Tensor, k: int, mode: str) -> Tensor:
    r = k // 2
    p = pad2d(x, r, mode)
    patches = p.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H, W, k, k)
    patches = patches.reshape(*patches.shape[:4], k * k)
    return patches.kthvalue(k * k // 2 + 1, dim=-1).values


def median_filter(x: Tensor, kernel_size: int = 3, repeats: int = 1, mode: str = "nearest", chunk: int = 256) -> Tensor:
    """``k x k`` median filter applied ``repeats`` times (``repeats = 0`` is the identity).

    Equals ``scipy.ndimage.median_filter(x, size=(1, 1, k, k), mode=mode)`` applied
    ``repeats`` times, exactly. Work is done ``chunk`` images at a time (cache-sized).
    """
    _check_images(x)
    k = _check_kernel(kernel_size)
    _check_mode(mode)
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 0:
        raise UserError(f"repeats: expected a non-negative integer, got {repeats!r}")
    if k == 1 or repeats == 0:
        return x.clone()
    out = torch.empty_like(x)
    step = max(1, int(chunk)) if x.device.type == "cpu" else max(1, x.shape[0])
    for s in range(0, x.shape[0], step):
        y = x[s : s + step]
        for _ in range(int(repeats)):
            y = _median3x3(y, mode) if k == 3 else _median_unfold(y, k, mode)
        out[s : s + step] = y
    return out


# ---------------------------------------------------------------------------- colour
def invert(x: Tensor) -> Tensor:
    """Colour reversal ``1 - x`` (Itazuri et al. 2019, Table 2 "Reversed")."""
    _check_images(x)
    return 1.0 - x


LUMA = (0.299, 0.587, 0.114)


def greyscale(x: Tensor) -> Tensor:
    """ITU-R BT.601 luma, copied to every channel (single-channel input is returned as is)."""
    _check_images(x)
    if x.shape[1] == 1:
        return x.clone()
    if x.shape[1] != 3:
        raise UserError(f"greyscale: expected 1 or 3 channels, got {x.shape[1]}")
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand_as(x).contiguous()


# ---------------------------------------------------------------------------- Fourier
def frequency_radius(h: int, w: int, device: torch.device | str = "cpu") -> Tensor:
    """Radius of each (unshifted) FFT bin in units of the Nyquist frequency (0.5 cycles/pixel)."""
    fy = torch.fft.fftfreq(h, device=device).view(-1, 1)
    fx = torch.fft.fftfreq(w, device=device).view(1, -1)
    return torch.sqrt(fy**2 + fx**2) / 0.5


def fourier_mask(h: int, w: int, radius: float, kind: str, mask: str = "ideal", device: torch.device | str = "cpu") -> Tensor:
    """The (H, W) multiplier of a low- or high-pass filter (see module docstring)."""
    radius = float(radius)
    if math.isnan(radius) or radius < 0:
        raise UserError(f"radius: expected a non-negative number, got {radius!r}")
    if kind not in ("lowpass", "highpass"):
        raise UserError(f"kind: expected lowpass or highpass, got {kind!r}")
    if mask not in ("ideal", "gaussian"):
        raise UserError(f"mask: expected ideal or gaussian, got {mask!r}")
    r = frequency_radius(h, w, device)
    if mask == "ideal":
        low = (r <= radius).float() if kind == "lowpass" else (r < radius).float()
    elif radius == 0:
        low = (r == 0).float()
    elif math.isinf(radius):
        low = torch.ones_like(r)
    else:
        low = torch.exp(-(r**2) / (2 * radius**2))
    m = low if kind == "lowpass" else 1.0 - low
    if kind == "highpass":
        m[0, 0] = 1.0  # keep the mean colour
    return m


def fourier_filter(x: Tensor, radius: float, kind: str = "lowpass", mask: str = "ideal", clip: bool = True) -> Tensor:
    """Low- or high-pass filter each channel in the Fourier domain."""
    _check_images(x)
    h, w = x.shape[-2:]
    m = fourier_mask(h, w, radius, kind, mask, x.device)
    if bool((m == 1).all()):
        return x.clone()
    y = torch.fft.ifft2(torch.fft.fft2(x.double()) * m).real.to(x.dtype)
    return y.clamp_(0, 1) if clip else y


def lowpass(x: Tensor, radius: float, mask: str = "ideal") -> Tensor:
    return fourier_filter(x, radius, "lowpass", mask)


def highpass(x: Tensor, radius: float, mask: str = "ideal") -> Tensor:
    return fourier_filter(x, radius, "highpass", mask)


# ---------------------------------------------------------------------------- shape only
def _masks_for(x: Tensor, masks: Tensor | None, probe: str) -> Tensor:
    if masks is None:
        raise UserError(f"{probe}: needs foreground masks, and this data set has none (the procedural set 'trifeature' has them)")
    if masks.dim() != 3 or masks.shape[0] != x.shape[0] or tuple(masks.shape[-2:]) != tuple(x.shape[-2:]):
        raise UserError(f"{probe}: masks of shape {tuple(masks.shape)} do not match images {tuple(x.shape)}")
    return masks.to(x.device).bool()


POLARITIES = ("dark", "light")


def _check_polarity(polarity: str, probe: str) -> None:
    if polarity not in POLARITIES:
        raise UserError(f"{probe}: polarity must be 'dark' (dark on white) or 'light' (white on black), got {polarity!r}")


def silhouette(x: Tensor, masks: Tensor | None, polarity: str = "dark") -> Tensor:
    """Filled silhouette on every channel: black shape (0) on white (1) (Chen et al. 2020), or
    with ``polarity="light"`` white shape on black."""
    _check_images(x)
    _check_polarity(polarity, "silhouette")
    m = _masks_for(x, masks, "silhouette")
    fg = m if polarity == "light" else ~m
    return fg.to(x.dtype).unsqueeze(1).expand_as(x).contiguous()


def _outline(m: Tensor) -> Tensor:
    """Mask minus its 4-neighbour erosion (border pixels of the shape)."""
    p = F.pad(m.float().unsqueeze(1), (1, 1, 1, 1), mode="replicate")
    er = p[:, :, 1:-1, 1:-1] * p[:, :, :-2, 1:-1] * p[:, :, 2:, 1:-1] * p[:, :, 1:-1, :-2] * p[:, :, 1:-1, 2:]
    return m & ~(er.squeeze(1) > 0)


def sobel_magnitude(x: Tensor) -> Tensor:
    """Sobel gradient magnitude (N, H, W) of the sigma-1 Gaussian-smoothed luma, reflect padding."""
    _check_images(x)
    g = greyscale(x)[:, :1] if x.shape[1] == 3 else x[:, :1]
    g = gaussian_blur(g, 1.0, 5, backend="torch")
    p = F.pad(g, (1, 1, 1, 1), mode="reflect") if min(g.shape[-2:]) > 1 else F.pad(g, (1, 1, 1, 1), mode="replicate")
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    gx = F.conv2d(p, kx.view(1, 1, 3, 3))
    gy = F.conv2d(p, kx.t().contiguous().view(1, 1, 3, 3))
    return torch.sqrt(gx**2 + gy**2).squeeze(1)


def edges(x: Tensor, masks: Tensor | None = None, polarity: str = "dark") -> Tensor:
    """Edge map, black lines on white (``polarity="light"``: white on black): the mask outline
    where masks exist, else Sobel."""
    _check_images(x)
    _check_polarity(polarity, "edges")
    if masks is not None:
        e = _outline(_masks_for(x, masks, "edges")).to(x.dtype)
    else:
        mag = sobel_magnitude(x)
        e = mag / mag.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (e if polarity == "light" else 1.0 - e).unsqueeze(1).expand_as(x).contiguous()


# ---------------------------------------------------------------------------- stylisation
def amplitude_phase_swap(content: Tensor, style: Tensor) -> Tensor:
    """``ifft2(|F(style)| * exp(i * angle(F(content))))`` per channel, unclipped.

    The result has the Fourier phase of ``content`` (where its amplitude is non-zero) and the
    Fourier amplitude of ``style``: the "amplitude carries texture, phase carries shape"
    recombination of Oppenheim & Lim (1981), used as a weight-free stylisation.
    """
    _check_images(content, "content")
    _check_images(style, "style")
    if content.shape != style.shape:
        raise UserError(f"stylize: style images {tuple(style.shape)} must match content {tuple(content.shape)}")
    fc = torch.fft.fft2(content.double())
    fs = torch.fft.fft2(style.double())
    out = torch.fft.ifft2(torch.polar(fs.abs(), fc.angle())).real
    return out.to(content.dtype)


def check_style_pool(pool: Tensor | None, x: Tensor) -> Tensor:
    """A style pool must be non-empty (P, C, H, W) images (float [0, 1] or uint8) with the images' C, H, W."""
    if pool is None or not isinstance(pool, Tensor) or pool.dim() != 4 or pool.shape[0] == 0:
        got = "none" if pool is None else (tuple(pool.shape) if isinstance(pool, Tensor) else type(pool).__name__)
        raise UserError(f"stylize: the style pool is empty or not (P, C, H, W) images (got {got})")
    if tuple(pool.shape[1:]) != tuple(x.shape[1:]):
        raise UserError(
            f"stylize: style pool images are {tuple(pool.shape[1:])} (C, H, W) but the images are {tuple(x.shape[1:])}; "
            "resize the pool to the data's size"
        )
    return pool


def draw_styles(
    n: int,
    pool_size: int,
    generator: torch.Generator,
    labels: Tensor | None = None,
    pool_labels: Tensor | None = None,
    tries: int = 16,
) -> Tensor:
    """Indices into the pool, one per image, seeded; of another class where labels are given."""
    idx = torch.randint(pool_size, (n,), generator=generator)
    if labels is not None and pool_labels is not None:
        labels = labels.cpu()
        pool_labels = pool_labels.cpu()
        for _ in range(tries):
            same = pool_labels[idx] == labels
            if not bool(same.any()):
                break
            idx[same] = torch.randint(pool_size, (int(same.sum()),), generator=generator)
    return idx


def stylize(
    x: Tensor,
    style_pool: Tensor | None,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    pool_labels: Tensor | None = None,
    method: str = "fourier",
    adain: Any = None,
    alpha: float = 1.0,
) -> Tensor:
    """Replace texture, keep shape: each image gets a style drawn (seeded) from ``style_pool``.

    ``method='fourier'``: :func:`amplitude_phase_swap` clipped to [0, 1];
    ``method='adain'``: ``adain`` is an :class:`robustlens.probes.adain.AdaIN` network.
    """
    _check_images(x)
    pool = check_style_pool(style_pool, x)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    idx = draw_styles(x.shape[0], pool.shape[0], g, labels, pool_labels)
    style = pool[idx]
    style = style.to(x.device, x.dtype) if style.is_floating_point() else style.to(x.device).to(x.dtype).div_(255.0)
    if method == "fourier":
        return amplitude_phase_swap(x, style).clamp_(0, 1)
    if method == "adain":
        if adain is None:
            raise UserError("stylize: method 'adain' needs the AdaIN network (pass --adain-encoder and --adain-decoder)")
        return adain.stylize(x, style, alpha=alpha)
    raise UserError(f"stylize: unknown method {method!r}; expected fourier or adain")


# ---------------------------------------------------------------------------- registry
@dataclass
class ProbeContext:
    """What a probe may need besides the images: masks, labels, a style pool, randomness."""

    masks: Tensor | None = None
    labels: Tensor | None = None
    style_pool: Tensor | None = None
    pool_labels: Tensor | None = None
    generator: torch.Generator | None = None
    adain: Any = None


@dataclass(frozen=True)
class Probe:
    """A named transformation with a default level grid and fixed parameters.

    ``apply(x, level, ctx)`` transforms a batch; ``level`` is the grid value (sigma, repeats,
    radius) or ``None`` for single-level probes. ``with_params`` returns a copy with other
    fixed parameters (e.g. ``kernel_size``) or another grid (``levels=...``).
    """

    name: str
    fn: Callable[..., Tensor]
    levels: tuple = (None,)
    level_name: str | None = None
    params: dict = field(default_factory=dict)
    description: str = ""
    # apply(apply(x, a), b) == apply(x, a + b) exactly (repeated filters): a grid of levels is
    # then computed incrementally, each level from the previous one
    iterative: bool = False
    # the probe takes colour away, so on 1-channel data it is the identity (see skip_reason)
    needs_colour: bool = False

    def skip_reason(self, channels: int) -> str | None:
        """Why this probe says nothing on ``channels``-channel images, or ``None`` if it applies."""
        if self.needs_colour and int(channels) == 1:
            return "the data is already greyscale"
        return None

    def apply(self, x: Tensor, level: Any = None, ctx: ProbeContext | None = None) -> Tensor:
        return self.fn(x, level, ctx or ProbeContext(), **self.params)

    def with_params(self, levels: Sequence | None = None, **params: Any) -> "Probe":
        unknown = set(params) - set(self.params)
        if unknown:
            raise UserError(
                f"probe {self.name!r}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                f"it takes {', '.join(sorted(self.params)) or 'none'}"
            )
        new_levels = tuple(levels) if levels is not None else self.levels
        if self.level_name is not None and (not new_levels or None in new_levels):
            raise UserError(f"probe {self.name!r}: needs a non-empty grid of {self.level_name} values")
        return replace(self, levels=new_levels, params={**self.params, **params})


def _blur(x, level, ctx, kernel_size=7, backend="auto"):
    return gaussian_blur(x, level, kernel_size, backend)


def _median(x, level, ctx, kernel_size=3, mode="nearest"):
    return median_filter(x, kernel_size, int(level), mode)


def _lowpass(x, level, ctx, mask="ideal"):
    return fourier_filter(x, level, "lowpass", mask)


def _highpass(x, level, ctx, mask="ideal"):
    return fourier_filter(x, level, "highpass", mask)


def _stylize(x, level, ctx, method="fourier", alpha=1.0):
    return stylize(x, ctx.style_pool, ctx.generator, ctx.labels, ctx.pool_labels, method, ctx.adain, alpha)


PROBES: Registry[Probe] = Registry("probe", key="--probes")
for _probe in [
    Probe("blur", _blur, (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0), "sigma", {"kernel_size": 7, "backend": "auto"},
          "Gaussian blur, sigma grid at a fixed kernel size"),
    Probe("median", _median, (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10), "repeats", {"kernel_size": 3, "mode": "nearest"},
          "median filter applied 0..N times", iterative=True),
    Probe("invert", lambda x, level, ctx: invert(x), description="colour reversal 1 - x"),
    Probe("greyscale", lambda x, level, ctx: greyscale(x), description="BT.601 luma on every channel",
          needs_colour=True),
    Probe("lowpass", _lowpass, (1.5, 1.0, 0.5, 0.25, 0.125), "radius", {"mask": "ideal"},
          "Fourier low-pass, radius in units of Nyquist"),
    Probe("highpass", _highpass, (0.0, 0.125, 0.25, 0.5, 1.0), "radius", {"mask": "ideal"},
          "Fourier high-pass (DC kept), radius in units of Nyquist"),
    Probe("silhouette", lambda x, level, ctx, polarity="dark": silhouette(x, ctx.masks, polarity), params={"polarity": "dark"},
          description="filled mask, black on white (polarity 'light': white on black)"),
    Probe("edges", lambda x, level, ctx, polarity="dark": edges(x, ctx.masks, polarity), params={"polarity": "dark"},
          description="mask outline (or Sobel), black on white (polarity 'light': white on black)"),
    Probe("stylize", _stylize, params={"method": "fourier", "alpha": 1.0},
          description="texture replaced: Fourier amplitude (or AdaIN) of a pool image"),
]:
    PROBES.add(_probe.name, _probe, _probe.description)
del _probe


def get_probe(name: str) -> Probe:
    """The registered probe ``name``; an unknown name is a :class:`UserError` listing the valid ones."""
    if name not in PROBES:
        raise UserError(f"unknown probe {name!r}; valid probes: {', '.join(PROBES)}")
    return PROBES.get(name)
