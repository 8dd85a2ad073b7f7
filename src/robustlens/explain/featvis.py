"""Feature visualisation: first-layer filters and deeper channels by gradient ascent.

* :func:`filter_grid`: the first convolution's filters, each min-max normalised to [0, 1]
  on its own (main paper Fig. 3, left); a 1-channel model's filters are grey images.
* :func:`visualize_channels`: activation maximisation (Erhan et al. 2009): find an input
  that maximises the mean activation of channel c of a named layer, by Adam on a
  parameterised image. The parameterisation and regularising transforms follow Olah et
  al. (2017, *Feature Visualization*, Distill) and their Lucid library:

  - ``param="fourier"``: the image is the orthonormal inverse real FFT of a learnt
    spectrum scaled by 1 / max(|f|, 1/max(H, W)) (Lucid ``fft_image``, ``decay_power=1``),
    divided by 4;
  - ``decorrelate=True``: channels are mixed by Lucid's colour-correlation square root
    (``color_correlation_svd_sqrt``, columns normalised by the largest column norm), then a
    sigmoid maps to [0, 1] (Lucid ``to_valid_rgb``). The matrix is an RGB one: for any other
    channel count (a 1-channel, greyscale model) the mixing is the identity, only the sigmoid;
  - ``transforms=True``: Lucid's ``standard_transforms`` (pad 12 with 0.5, jitter 8,
    random scale in {1 + (i - 5) / 50}, random rotation in -10..10 degrees, jitter 4),
    done per image with ``affine_grid`` / ``grid_sample``. Jitter is a random integer
    translation (the two jitters together: up to 8 + 4 pixels) folded into the same
    affine map instead of Lucid's crops, so the image keeps its padded size.

  Many channels are optimised together, one image per channel in one batch; everything
  random comes from one seeded ``torch.Generator``.
* :func:`hf_share`: the high-frequency share of visualisations' spectral energy.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlens.errors import UserError
from robustlens.progress import track
from robustlens.explain.saliency import capture, find_layer

# Lucid's colour-correlation square root (ImageNet statistics), rows = output RGB.
COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float64
)
SCALES = tuple(1 + (i - 5) / 50.0 for i in range(11))
ANGLES = tuple(range(-10, 11)) + (0,) * 5


def _first_conv(model: nn.Module) -> nn.Conv2d:
    conv = getattr(model, "first_conv", None)
    if isinstance(conv, nn.Conv2d):
        return conv
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise UserError(f"filter grid: {type(model).__name__} has no nn.Conv2d")


def first_layer_filters(model: nn.Module | nn.Conv2d) -> Tensor:
    """The first conv's weights (K, C, kh, kw), each filter min-max normalised to [0, 1].

    Filters with more or fewer than 3 input channels are shown as their channel mean (grey).
    """
    conv = model if isinstance(model, nn.Conv2d) else _first_conv(model)
    w = conv.weight.detach().float().cpu()
    if w.shape[1] != 3:
        w = w.mean(1, keepdim=True)
    flat = w.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1, 1)
    return (w - lo) / (hi - lo).clamp(min=1e-12)


def filter_grid(model: nn.Module | nn.Conv2d, path: str | os.PathLike | None = None, title: str | None = None) -> Tensor:
    """First-layer filters normalised per filter; written as a PNG grid when ``path`` is given."""
    filters = first_layer_filters(model)
    if path is not None:
        from robustlens.explain.render import image_grid

        image_grid(filters, path, title=title or "first-layer filters", cell=0.6)
    return filters


# ----------------------------------------------------------------------------- parameterisation


def _freqs(h: int, w: int) -> Tensor:
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class ImageParam(nn.Module):
    """A batch of learnable images (K, C, H, W) -> [0, 1] (Lucid ``image`` + ``to_valid_rgb``)."""

    def __init__(
        self,
        n: int,
        channels: int,
        size: int,
        param: str = "fourier",
        decorrelate: bool = True,
        generator: torch.Generator | None = None,
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        if param not in ("fourier", "pixel"):
            raise UserError(f"param: expected 'fourier' or 'pixel', got {param!r}")
        self.param, self.size, self.channels = param, size, channels
        self.decorrelate = decorrelate and channels == 3
        if param == "fourier":
            shape = (n, channels, size, size // 2 + 1, 2)
            scale = 1.0 / torch.clamp(_freqs(size, size), min=1.0 / size)  # decay_power = 1
            # Lucid multiplies by sqrt(h w) and uses TF's irfft2d (which divides by h w):
            # together the "ortho" inverse FFT used below, as in Lucent.
            self.register_buffer("scale", scale[None, None])
        else:
            shape = (n, channels, size, size)
        self.raw = nn.Parameter(torch.randn(shape, generator=generator) * init_std)
        c = COLOR_CORRELATION_SVD_SQRT.float()
        self.register_buffer("color", c / c.norm(dim=0).max())

    def forward(self) -> Tensor:
        if self.param == "fourier":
            spec = torch.view_as_complex(self.raw) * self.scale
            img = torch.fft.irfft2(spec, s=(self.size, self.size), norm="ortho") / 4.0
        else:
            img = self.raw
        if self.decorrelate:
            img = torch.einsum("ij,njhw->nihw", self.color, img)
        return torch.sigmoid(img)


def random_transform(x: Tensor, generator: torch.Generator | None = None, pad: int = 12, jitter: tuple[int, ...] = (8, 4)) -> Tensor:
    """Lucid's ``standard_transforms`` as one random affine map per image.

    Pad ``pad`` pixels with 0.5, then scale by a factor drawn from :data:`SCALES`, rotate
    by an angle from :data:`ANGLES` (degrees) and translate by an integer number of
    pixels in [-sum(jitter), sum(jitter)] per axis (the two jitters of Lucid), with
    bilinear ``grid_sample`` (border padding).
    """
    if pad:
        x = F.pad(x, (pad,) * 4, value=0.5)
    n, _, h, w = x.shape
    dev = x.device
    s = torch.tensor(SCALES)[torch.randint(len(SCALES), (n,), generator=generator)]
    a = torch.tensor(ANGLES, dtype=torch.float32)[torch.randint(len(ANGLES), (n,), generator=generator)] * math.pi / 180
    shift = torch.zeros(n, 2)
    for j in jitter:
        shift += torch.randint(-j, j + 1, (n, 2), generator=generator).float()
    # affine_grid maps output coords to input coords: input = A @ output + t (normalised units).
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack(
        [torch.stack([cos, -sin, -2 * shift[:, 0] / w], 1), torch.stack([sin, cos, -2 * shift[:, 1] / h], 1)], 1
    ).to(dev, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def visualize_channels(
    model: nn.Module,
    layer: str,
    channels: Sequence[int],
    size: int = 64,
    steps: int = 256,
    lr: float = 0.05,
    param: str = "fourier",
    decorrelate: bool = True,
    transforms: bool = True,
    seed: int = 0,
    in_channels: int | None = None,
    path: str | os.PathLike | None = None,
    progress: bool = False,
) -> Tensor:
    """Images (K, C, size, size) in [0, 1] maximising channel ``channels[k]`` of ``layer``.

    Objective (Erhan et al. 2009): the mean activation of the channel over space (for a
    (N, F) output: the unit itself); image k maximises ``channels[k]``, all in one batch,
    with Adam at ``lr`` (Lucid's default 0.05). Model parameters are frozen for the call
    and their ``requires_grad`` restored after; the model's mode is left as it is.
    ``path`` also writes a PNG grid.
    """
    module = find_layer(model, layer)
    chans = [int(c) for c in channels]
    if not chans:
        raise UserError("channels: expected at least one channel index")
    if int(steps) <= 0:
        raise UserError(f"steps: expected a positive integer, got {steps!r}")
    if int(size) < 8:
        raise UserError(f"size: expected at least 8 pixels, got {size!r}")
    conv = None
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            conv = m
            break
    c_in = in_channels or (conv.in_channels if conv is not None else 3)
    try:
        dev = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
    except StopIteration:
        dev, dtype = torch.device("cpu"), torch.float32
    gen = torch.Generator().manual_seed(int(seed))
    img = ImageParam(len(chans), c_in, int(size), param, decorrelate, generator=gen).to(dev)
    opt = torch.optim.Adam(img.parameters(), lr=lr)
    idx = torch.tensor(chans, device=dev)
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _ in track(range(int(steps)), f"featvis {layer}", unit="step", enabled=progress):
            x = img()
            if transforms:
                x = random_transform(x, gen)
            with capture(module) as acts:
                model(x.to(dtype))
            a = acts[0]
            if a.dim() < 2:
                raise UserError(f"layer {layer!r}: output of shape {tuple(a.shape)} has no channel axis")
            if int(idx.max()) >= a.shape[1] or int(idx.min()) < 0:
                raise UserError(f"channels: layer {layer!r} has {a.shape[1]} channels (0..{a.shape[1] - 1}), got {chans}")
            act = a.flatten(2).mean(2) if a.dim() > 2 else a
            obj = act.gather(1, idx[:, None]).sum()
            opt.zero_grad(set_to_none=True)
            (-obj).backward()
            opt.step()
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    with torch.no_grad():
        out = img().detach().float().cpu()
    if path is not None:
        from robustlens.explain.render import image_grid

        image_grid(out, path, labels=[f"{layer}:{c}" for c in chans], title=f"{layer}")
    return out


def hf_share(images: Tensor) -> float:
    """Share of the spectral energy of ``images`` (N, C, H, W; each image's channel mean
    removed) at radius above 0.25 cycles per pixel (half the Nyquist radius), over the batch:
    how much fine detail a channel visualisation holds (Chen et al. 2020: ADV's are smoother)."""
    x = images.float() - images.float().mean(dim=(2, 3), keepdim=True)
    h, w = x.shape[-2:]
    spec = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1)).abs() ** 2
    fy = torch.fft.fftshift(torch.fft.fftfreq(h)).view(-1, 1)
    fx = torch.fft.fftshift(torch.fft.fftfreq(w)).view(1, -1)
    high = ((fy**2 + fx**2).sqrt() > 0.25).float()
    return float(((spec * high).sum() / spec.sum().clamp_min(1e-12)))


def channel_activation(model: nn.Module, layer: str, images: Tensor, channels: Sequence[int]) -> Tensor:
    """Mean activation (N, K) of ``channels`` of ``layer`` for ``images`` (to check a visualisation)."""
    module = find_layer(model, layer)
    with torch.no_grad(), capture(module) as acts:
        model(images)
    a = acts[0]
    act = a.flatten(2).mean(2) if a.dim() > 2 else a
    return act[:, list(channels)]


def parse_featvis_spec(spec: str) -> list[tuple[str, int]]:
    """``"body.4:0,body.4:3,body.8:1"`` -> [("body.4", 0), ("body.4", 3), ("body.8", 1)]."""
    out = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, sep, ch = item.rpartition(":")
        if not sep or not name:
            raise UserError(f"--featvis: expected LAYER:CHANNEL items, got {item!r}")
        try:
            out.append((name, int(ch)))
        except ValueError:
            raise UserError(f"--featvis: channel must be an integer in {item!r}") from None
    if not out:
        raise UserError("--featvis: expected at least one LAYER:CHANNEL")
    return out


__all__ = [
    "ImageParam",
    "channel_activation",
    "filter_grid",
    "first_layer_filters",
    "parse_featvis_spec",
    "random_transform",
    "visualize_channels",
]
