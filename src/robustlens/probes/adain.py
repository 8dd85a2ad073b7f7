"""AdaIN style transfer (Huang & Belongie 2017, "Arbitrary Style Transfer in Real-time with
Adaptive Instance Normalization"), for the stylisation probe (Geirhos et al. 2019's
Stylized-ImageNet recipe, used by Itazuri et al. 2019 Table 2 and Chen et al. 2020).

The architecture is that of the public PyTorch port (naoto0804/pytorch-AdaIN, ``net.py``):

* encoder: the "normalised VGG-19" (a 1x1 input conv, then VGG-19 convolutions with reflection
  padding) up to ``relu4_1`` (the first 31 modules of the 53-module ``vgg`` Sequential);
* decoder: the mirror image, nearest upsampling, reflection padding.

Weights are the user's files (``vgg_normalised.pth`` and ``decoder.pth``, plain state dicts, or
the same tensors as ``.safetensors``). ``.pth`` files are read with
``torch.load(weights_only=True)`` only (no pickled code runs). Missing files raise a
:class:`UserError` that names the file and the option that points to it.

AdaIN (Eq. 8): ``AdaIN(x, y) = sigma(y) * (x - mu(x)) / sigma(x) + mu(y)`` per channel, over
spatial positions; the output image is ``decoder(alpha * t + (1 - alpha) * f(c))``, clipped to
[0, 1].

Greyscale (1-channel) images: the public network is an RGB one (its first layer takes 3
channels), so content and style go in as grey RGB (R = G = B) and the output comes back as its
ITU-R BT.601 luma (:func:`robustlens.probes.transforms.greyscale`), 1 channel. Eq. 8 itself
runs per feature channel of ``relu4_1`` (512 of them) whatever the image's channel count.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from robustlens.errors import UserError

ENCODER_FILE = "vgg_normalised.pth"
DECODER_FILE = "decoder.pth"
ENCODER_LAYERS = 31  # modules up to and including relu4_1


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(cin, cout, (3, 3)), nn.ReLU()]


def vgg_normalised() -> nn.Sequential:
    """The full 53-module normalised VGG-19 of the public AdaIN release (keys ``0.weight``...)."""
    pool = lambda: nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True)  # noqa: E731
    layers: list[nn.Module] = [nn.Conv2d(3, 3, (1, 1))]
    layers += _conv(3, 64) + _conv(64, 64) + [pool()]
    layers += _conv(64, 128) + _conv(128, 128) + [pool()]
    layers += _conv(128, 256) + _conv(256, 256) + _conv(256, 256) + _conv(256, 256) + [pool()]
    layers += _conv(256, 512) + _conv(512, 512) + _conv(512, 512) + _conv(512, 512) + [pool()]
    layers += _conv(512, 512) + _conv(512, 512) + _conv(512, 512) + _conv(512, 512)
    return nn.Sequential(*layers)


def encoder() -> nn.Sequential:
    """VGG-19 up to ``relu4_1`` (first 31 modules of :func:`vgg_normalised`)."""
    return nn.Sequential(*list(vgg_normalised().children())[:ENCODER_LAYERS])


def decoder() -> nn.Sequential:
    """The AdaIN decoder (keys ``1.weight``, ``1.bias``, ...)."""
    up = lambda: nn.Upsample(scale_factor=2, mode="nearest")  # noqa: E731
    layers: list[nn.Module] = _conv(512, 256) + [up()]
    layers += _conv(256, 256) + _conv(256, 256) + _conv(256, 256) + _conv(256, 128) + [up()]
    layers += _conv(128, 128) + _conv(128, 64) + [up()]
    layers += _conv(64, 64) + [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(64, 3, (3, 3))]
    return nn.Sequential(*layers)


def load_state_dict_file(path: str | Path, option: str) -> dict[str, Tensor]:
    """A plain state dict from ``.pth`` (``torch.load(weights_only=True)``) or ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{option}: AdaIN weight file {path} not found; download the public AdaIN weights "
            f"({ENCODER_FILE} and {DECODER_FILE}) and pass their paths with --adain-encoder / --adain-decoder"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file
        raise UserError(f"{option}: cannot read {path} as a state dict ({type(e).__name__}: {e})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise UserError(f"{option}: {path} is not a plain state dict of tensors")
    return sd


def _load_into(module: nn.Module, sd: dict[str, Tensor], path: str | Path, option: str) -> None:
    want = module.state_dict()
    missing = [k for k in want if k not in sd]
    if missing:
        raise UserError(f"{option}: {path} lacks {len(missing)} AdaIN tensors (first: {missing[0]!r}); is it the right file?")
    bad = [k for k in want if tuple(sd[k].shape) != tuple(want[k].shape)]
    if bad:
        k = bad[0]
        raise UserError(f"{option}: {path}: tensor {k!r} has shape {tuple(sd[k].shape)}, expected {tuple(want[k].shape)}")
    module.load_state_dict({k: sd[k] for k in want})


def adain(content: Tensor, style: Tensor, eps: float = 1e-5) -> Tensor:
    """Adaptive instance normalisation (Huang & Belongie 2017, Eq. 8) of (N, C, H, W) features."""
    c_mean = content.mean((2, 3), keepdim=True)
    c_std = (content.var((2, 3), keepdim=True, unbiased=True) + eps).sqrt()
    s_mean = style.mean((2, 3), keepdim=True)
    s_std = (style.var((2, 3), keepdim=True, unbiased=True) + eps).sqrt()
    return (content - c_mean) / c_std * s_std + s_mean


class AdaIN(nn.Module):
    """Encoder + AdaIN + decoder; ``stylize(content, style, alpha)`` on [0, 1] images."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = encoder()
        self.decoder = decoder()

    @classmethod
    def from_files(cls, encoder_path: str | Path | None, decoder_path: str | Path | None, device: str | torch.device = "cpu") -> "AdaIN":
        if encoder_path is None:
            raise UserError(f"--adain-encoder: stylize with method 'adain' needs the AdaIN encoder weights ({ENCODER_FILE})")
        if decoder_path is None:
            raise UserError(f"--adain-decoder: stylize with method 'adain' needs the AdaIN decoder weights ({DECODER_FILE})")
        net = cls()
        enc_sd = load_state_dict_file(encoder_path, "--adain-encoder")
        # the public file holds the whole VGG-19 (53 modules); keep the layers up to relu4_1
        _load_into(net.encoder, enc_sd, encoder_path, "--adain-encoder")
        _load_into(net.decoder, load_state_dict_file(decoder_path, "--adain-decoder"), decoder_path, "--adain-decoder")
        return net.to(device).eval()

    @torch.no_grad()
    def stylize(self, content: Tensor, style: Tensor, alpha: float = 1.0) -> Tensor:
        if not 0.0 <= float(alpha) <= 1.0:
            raise UserError(f"alpha: expected a number in [0, 1], got {alpha!r}")
        from robustlens.probes.transforms import greyscale

        c = content.shape[1]
        if c not in (1, 3) or style.shape[1] != c:
            raise UserError(f"stylize (adain): expected 1- or 3-channel content and style alike, got {c} and {style.shape[1]}")
        if c == 1:  # the RGB network sees a grey image as R = G = B (module docstring)
            content, style = content.expand(-1, 3, -1, -1), style.expand(-1, 3, -1, -1)
        h, w = content.shape[-2:]
        fc = self.encoder(content)
        fs = self.encoder(style)
        t = float(alpha) * adain(fc, fs) + (1.0 - float(alpha)) * fc
        out = self.decoder(t)
        if tuple(out.shape[-2:]) != (h, w):  # sizes not divisible by 8
            out = nn.functional.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        out = out.clamp_(0, 1)
        return greyscale(out)[:, :1].contiguous() if c == 1 else out
