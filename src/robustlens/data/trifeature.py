"""The procedural *trifeature* data set, modelled on Hermann & Lampinen (2020),
"What shapes feature representations? Exploring datasets, architectures, and training"
(NeurIPS 2020), Section 3 ("Trifeature": every image is a shape, filled with a texture, in a
colour, so each of the three factors can serve as the label).

Every image is one of 10 silhouettes (``SHAPES``) at a random position, scale and rotation,
filled with one of 10 fine periodic/noise textures (``TEXTURES``) of amplitude ``contrast``
around one of 10 colours (``COLOURS``), on a plain grey-level background. Pixels are

    x = background                                   outside the silhouette,
    x = clip(colour + contrast * pattern(texture), 0, 1)   inside it,

with ``pattern`` in [-1, 1]. Masks are exact (no anti-aliasing), so the box of an image is the
bounding box of its mask. Texture patterns live in image coordinates (not rotated with the
shape, so stripe orientation is part of the texture identity) with a random phase per image.

Generation is vectorised over the whole batch: per-image parameters are drawn up front, shape
masks come from inside tests (half-planes, implicit curves) on a batch of rotated/scaled
coordinate grids, one class at a time (a loop over the 10 classes, never over images or
pixels), and everything is deterministic from ``seed`` (each split has its own stream).

The study's world (``robustlens/study/default.toml``; issue 15). The seeds explain what ADV
models look at by two properties of the data, and the default study builds both in:

* robust features are less predictive than non-robust ones (Tsipras et al. 2019, "Robustness
  may be at odds with accuracy", as cited by the main paper): here the *shape*, a silhouette
  step of at least 0.44 (14 eps at 8/255) that no eps-perturbation can forge, agrees with the
  class only 86.5% of the time (``shape_corr = 0.85``: copied with probability 0.85, uniform
  otherwise);
* non-robust features are predictive yet brittle (Ilyas et al. 2019, "Adversarial examples
  are not bugs, they are features"): the class *is* the texture (``label = "texture"``, it
  agrees 100%), a fine pattern of amplitude 0.06 = 1.9 eps. Below 2 eps a perturbation can
  remove eps of one texture and draw another at eps, so the texture can be forged
  (:func:`cue_table`'s ``forgeable_at_eps``).

So STD, minimising the clean loss, follows the texture (clean accuracy near 1, no robustness),
and ADV, whose adversary forges the texture at every step, can only trust the shape (clean
accuracy near the shape's 86.5%, robust). Objects are large (radius 40-50% of the side,
``scale_min`` / ``scale_max``) so that a small CNN learns the faint texture in the default
recipe's 4 epochs (measured: ``benchmarks/bench_study_world.py`` at 5 epochs; at 25-42% STD reached only
0.92). The colour is noise (agrees 10%, chance). :meth:`TrifeatureConfig.describe` states a
world in these words ("the class is the texture ...; the shape agrees with it 86.5% of the
time"); the study's data section prints it with :func:`cue_table`.

Splits:
    ``train`` / ``test``: i.i.d. draws. The label factor (``label``, default ``"shape"``) is
        balanced; each other factor copies the label's class with probability ``<factor>_corr``
        and is uniformly random otherwise (so its agreement rate is ``corr + (1 - corr) / 10``).
        With the library defaults (``texture_corr=1``, ``colour_corr=0``) texture is a perfect
        shortcut for shape, colour is noise: the DESIGN's calibration set. The class's own
        ``<label>_corr`` is refused (it always agrees with itself), and so is a ``contrast``
        above :data:`MAX_CONTRAST` (it would clip the colours).
    ``conflict``: cue-conflict images (Geirhos et al. 2019): shape of one class, texture of
        another (always different), colour uniformly random; label = the ``label`` factor,
        ``factors`` carry all three so shape bias = shape hits / (shape hits + texture hits).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import Tensor

from robustlens.data.base import ImageSet
from robustlens.errors import UserError

SHAPES: tuple[str, ...] = (
    "circle", "triangle", "square", "pentagon", "star", "cross", "heart", "diamond", "arrow", "crescent",
)
TEXTURES: tuple[str, ...] = (
    "hstripes", "vstripes", "dstripes", "astripes", "checkers", "dots", "grid", "waves", "rings", "noise",
)
COLOURS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta", "brown", "white",
)
# RGB in [0.2, 0.8], so that a texture of amplitude <= MAX_CONTRAST never clips the colour.
COLOUR_RGB = torch.tensor(
    [
        [0.80, 0.20, 0.20],
        [0.80, 0.50, 0.20],
        [0.78, 0.78, 0.20],
        [0.20, 0.70, 0.25],
        [0.20, 0.74, 0.78],
        [0.20, 0.30, 0.80],
        [0.50, 0.25, 0.75],
        [0.80, 0.25, 0.70],
        [0.50, 0.33, 0.20],
        [0.80, 0.80, 0.80],
    ],
    dtype=torch.float32,
)
#: the largest texture amplitude that never clips: the palette's distance to 0 and to 1
MAX_CONTRAST: float = round(float(min(COLOUR_RGB.min(), 1 - COLOUR_RGB.max())), 6)
FACTOR_NAMES: tuple[str, str, str] = ("shape", "texture", "colour")
FACTOR_CLASSES = {"shape": SHAPES, "texture": TEXTURES, "colour": COLOURS}
SPLITS: tuple[str, ...] = ("train", "test", "conflict")
_SPLIT_STREAM = {"train": 0, "test": 1, "conflict": 2}
_CHUNK = 1024  # images rendered at once (fixed, so output never depends on it)


@dataclass(frozen=True)
class TrifeatureConfig:
    """Options of the procedural set (all overridable as ``trifeature:key=value,...``).

    Attributes:
        size: image side in pixels (32..224 is the intended range; 16..1024 accepted).
        label: which factor is the class label: ``"shape"``, ``"texture"`` or ``"colour"``.
        contrast: texture amplitude in [0, MAX_CONTRAST] (pixel units; 0.2, beyond which the
            colours would clip). The study's world uses 0.06 = 1.9 eps at 8/255.
        texture_corr: probability that texture copies the label's class (train/test splits).
        colour_corr: probability that colour copies the label's class.
        shape_corr: probability that shape copies the label's class (used when the label is
            texture or colour).
        n_train, n_test, n_conflict: number of images per split.
        seed: random seed; every split has its own stream derived from it.
        background: grey level of the plain background, in [0, 1].
        period: texture period as a fraction of ``size`` (0.125 -> 4 px at 32x32).
        scale_min, scale_max: object radius as a fraction of ``size``.
    """

    size: int = 32
    label: str = "shape"
    contrast: float = 0.07
    texture_corr: float = 1.0
    colour_corr: float = 0.0
    shape_corr: float = 0.0
    n_train: int = 8000
    n_test: int = 2000
    n_conflict: int = 2000
    seed: int = 0
    background: float = 0.0
    period: float = 0.125
    scale_min: float = 0.25
    scale_max: float = 0.42

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> UserError:
            return UserError(f"trifeature option {name}={getattr(self, name)!r}: expected {expected}")

        if not 16 <= self.size <= 1024:
            raise bad("size", "an integer between 16 and 1024")
        if self.label not in FACTOR_NAMES:
            raise bad("label", f"one of {', '.join(FACTOR_NAMES)}")
        for name in ("texture_corr", "colour_corr", "shape_corr"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "a probability in [0, 1] (the chance that this factor copies the class)")
        if not 0.0 <= self.background <= 1.0:
            raise bad("background", "a grey level in [0, 1]")
        if not 0.0 <= self.contrast <= MAX_CONTRAST:
            raise bad("contrast", f"an amplitude in [0, {MAX_CONTRAST}] (a larger one would clip the colours, which lie "
                                  f"in [{MAX_CONTRAST}, {1 - MAX_CONTRAST:g}])")
        own = f"{self.label}_corr"
        if getattr(self, own) != _FIELD_DEFAULTS[own]:
            raise UserError(f"trifeature option {own}={getattr(self, own)!r}: contradicts label={self.label!r} (the class "
                            f"is the {self.label}, which always agrees with itself); set the other factors' *_corr instead")
        for name in ("n_train", "n_test", "n_conflict"):
            if getattr(self, name) < 0:
                raise bad(name, "a non-negative integer")
        if not 0.0 < self.period <= 1.0:
            raise bad("period", "a number in (0, 1]")
        if not 0.05 <= self.scale_min <= self.scale_max <= 0.5:
            raise UserError(
                f"trifeature options scale_min={self.scale_min}, scale_max={self.scale_max}: "
                "expected 0.05 <= scale_min <= scale_max <= 0.5"
            )

    def describe(self, eps: float | None = None) -> str:
        """The world in a sentence a report reader understands, e.g. "the class is the texture
        (amplitude 0.060 = 1.9 eps); the shape agrees with it 86.5% of the time; the colour
        agrees with it 10% of the time (chance)". Agreement rates are ``corr + (1 - corr) / 10`` (a factor copies the class with
        probability ``corr`` and is uniformly random otherwise)."""
        amp = f"amplitude {self.contrast:.3f}" + (f" = {self.contrast / eps:.2g} eps" if eps else "")
        parts = [f"the class is the {self.label}" + (f" ({amp})" if self.label == "texture" else "")]
        for name in FACTOR_NAMES:
            if name != self.label:
                rate = agreement(getattr(self, f"{name}_corr"))
                extra = f" ({amp})" if name == "texture" else ""
                chance = " (chance)" if rate == 0.1 else ""
                parts.append(f"the {name}{extra} agrees with it {100 * rate:.3g}% of the time{chance}")
        return "; ".join(parts)

    @classmethod
    def from_options(cls, options: dict) -> "TrifeatureConfig":
        """Build from string or typed values (``{"size": "64"}`` and ``{"size": 64}`` alike)."""
        types = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(options) - set(types))
        if unknown:
            raise UserError(
                f"trifeature: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(types)}"
            )
        kw = {}
        for key, value in options.items():
            kind = types[key]
            if kind == "int":
                kw[key] = _to_int(key, value)
            elif kind == "float":
                kw[key] = _to_float(key, value)
            else:
                kw[key] = str(value)
        return cls(**kw)

    def n(self, split: str) -> int:
        return {"train": self.n_train, "test": self.n_test, "conflict": self.n_conflict}[split]


_FIELD_DEFAULTS = {f.name: f.default for f in fields(TrifeatureConfig)}


def agreement(corr: float, classes: int = 10) -> float:
    """Share of train / test images whose factor equals the class when it copies the class
    with probability ``corr`` and is uniform otherwise: ``corr + (1 - corr) / classes``."""
    return corr + (1.0 - corr) / classes


def cue_amplitudes(cfg: TrifeatureConfig) -> dict[str, float]:
    """The smallest pixel change (L-inf, [0, 1] units) that tells two classes of each cue apart:
    the texture's amplitude ``contrast``; the colour's smallest L-inf distance between two
    palette colours; the shape's silhouette step, the smallest largest-channel distance of a
    colour to the background (minus the texture that may darken it)."""
    rgb = COLOUR_RGB.double()
    pair = (rgb[:, None, :] - rgb[None, :, :]).abs().amax(-1)
    colour = float(pair[~torch.eye(len(rgb), dtype=torch.bool)].min())
    shape = float((rgb - cfg.background).abs().amax(-1).min()) - cfg.contrast
    return {"texture": cfg.contrast, "colour": colour, "shape": shape}


def cue_table(cfg: TrifeatureConfig, data: ImageSet, eps: float | None) -> list[dict]:
    """One row per cue: its agreement with the class on ``data`` (measured), its amplitude
    (:func:`cue_amplitudes`) and that amplitude in units of an L-inf ``eps`` (None: left out). Below 2 eps a cue can be
    forged: a perturbation of size eps removes eps of one class's pattern and draws another
    class's at eps (Ilyas et al.'s "non-robust" features: predictive, yet flipped by eps)."""
    amp = cue_amplitudes(cfg)
    rows = []
    for name in FACTOR_NAMES:
        rate = float((data.factor(name) == data.labels).double().mean()) if len(data) else float("nan")
        row = {"cue": name, "is_class": name == cfg.label, "agreement": rate, "amplitude": amp[name]}
        if eps:
            row.update(amplitude_over_eps=amp[name] / eps, forgeable_at_eps=amp[name] < 2 * eps)
        rows.append(row)
    return rows


def _to_int(key: str, value) -> int:
    if isinstance(value, bool):
        raise UserError(f"trifeature option {key}={value!r}: expected an integer")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise UserError(f"trifeature option {key}={value!r}: expected an integer") from None


def _to_float(key: str, value) -> float:
    if isinstance(value, bool):
        raise UserError(f"trifeature option {key}={value!r}: expected a number")
    try:
        if isinstance(value, str) and "/" in value:
            num, den = value.split("/", 1)
            out = float(num) / float(den)
        else:
            out = float(value)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"trifeature option {key}={value!r}: expected a number") from None
    if not math.isfinite(out):
        raise UserError(f"trifeature option {key}={value!r}: expected a finite number")
    return out


# ----------------------------------------------------------------------------------- shapes
def _regular_polygon(u: Tensor, v: Tensor, n: int, apothem: float, phase: float = math.pi / 2) -> Tensor:
    """Inside test of a regular n-gon (vertex at angle ``phase``): all half-planes hold."""
    inside = torch.ones_like(u, dtype=torch.bool)
    for k in range(n):
        a = phase + math.pi / n + 2 * math.pi * k / n  # outward normal of edge k
        inside &= u * math.cos(a) + v * math.sin(a) <= apothem
    return inside


def _shape_mask(k: int, u: Tensor, v: Tensor) -> Tensor:
    """Inside test of shape ``k`` in unit coordinates (the silhouette fits in the unit disc).

    ``v`` points up (image rows grow downwards, the caller flips it).
    """
    name = SHAPES[k]
    if name == "circle":
        return u * u + v * v <= 0.85 ** 2
    if name == "triangle":
        return _regular_polygon(u, v, 3, 0.5)  # circumradius 1
    if name == "square":
        return torch.maximum(u.abs(), v.abs()) <= 0.68
    if name == "pentagon":
        return _regular_polygon(u, v, 5, math.cos(math.pi / 5))
    if name == "star":  # hexagram: union of two triangles
        return _regular_polygon(u, v, 3, 0.5) | _regular_polygon(u, v, 3, 0.5, phase=-math.pi / 2)
    if name == "cross":
        au, av = u.abs(), v.abs()
        return ((au <= 0.28) & (av <= 0.95)) | ((av <= 0.28) & (au <= 0.95))
    if name == "heart":  # (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, spans about [-1.14, 1.14] x [-1, 1.25]
        x, y = u * 1.25, v * 1.25 + 0.12
        q = x * x + y * y - 1
        return q * q * q - x * x * y * y * y <= 0
    if name == "diamond":
        return u.abs() / 0.55 + v.abs() <= 1.0
    if name == "arrow":
        head = (v >= 0.05) & (v <= 0.05 + 0.9 - 0.9 * u.abs() / 0.65)  # triangle, apex at v=0.95
        shaft = (u.abs() <= 0.22) & (v >= -0.95) & (v < 0.05)
        return head | shaft
    if name == "crescent":
        return (u * u + v * v <= 0.95 ** 2) & ((u - 0.45) ** 2 + v * v > 0.72 ** 2)
    raise AssertionError(name)


# --------------------------------------------------------------------------------- textures
_NOISE_TILE = 128


def _noise_tile() -> Tensor:
    g = torch.Generator().manual_seed(20200101)
    return torch.randint(0, 2, (_NOISE_TILE * _NOISE_TILE,), generator=g).float().mul_(2).sub_(1)


_NOISE = _noise_tile()


def _texture(k: int, X: Tensor, Y: Tensor, period: float, R: Tensor, ix: Tensor, iy: Tensor) -> Tensor:
    """Pattern of texture ``k`` in [-1, 1].

    ``X``, ``Y``: phase-shifted pixel coordinates, (B, 1, W) and (B, H, 1); ``R``: distance to the object's
    centre (B, H, W) for "rings"; ``ix``, ``iy``: integer shifted coordinates for "noise".
    The result broadcasts to (B, H, W).
    """
    name = TEXTURES[k]
    w = 2 * math.pi / period
    if name == "hstripes":
        return torch.sin(Y * w)
    if name == "vstripes":
        return torch.sin(X * w)
    if name == "dstripes":
        return torch.sin((X + Y) * (w / math.sqrt(2)))
    if name == "astripes":
        return torch.sin((X - Y) * (w / math.sqrt(2)))
    if name == "checkers":
        return torch.sign(torch.sin(X * (w / 2)) * torch.sin(Y * (w / 2)) + 1e-6)
    if name == "dots":  # small discs on a square lattice
        fx = torch.remainder(X, period) - period / 2
        fy = torch.remainder(Y, period) - period / 2
        return (fx * fx + fy * fy <= (0.3 * period) ** 2).float().mul_(2).sub_(1)
    if name == "grid":  # thin lines along both axes
        fx = torch.remainder(X, period)
        fy = torch.remainder(Y, period)
        thin = max(1.0, 0.25 * period)
        return ((fx < thin) | (fy < thin)).float().mul_(2).sub_(1)
    if name == "waves":
        return torch.sin(Y * w + 1.6 * torch.sin(X * (w / 2)))
    if name == "rings":
        return torch.cos(R * w)
    if name == "noise":
        return _NOISE[(iy % _NOISE_TILE) * _NOISE_TILE + (ix % _NOISE_TILE)]
    raise AssertionError(name)


# ------------------------------------------------------------------------------ generation
def _split_generator(seed: int, split: str) -> torch.Generator:
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _SPLIT_STREAM[split], 0x7F1E]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _draw_factors(cfg: TrifeatureConfig, split: str, n: int, g: torch.Generator) -> Tensor:
    """(n, 3) int64 (shape, texture, colour) for a split."""
    li = FACTOR_NAMES.index(cfg.label)
    label = torch.randperm(n, generator=g) % 10  # balanced classes, shuffled
    cols = []
    for j, name in enumerate(FACTOR_NAMES):
        rand = torch.randint(0, 10, (n,), generator=g)
        copy = torch.rand(n, generator=g)
        if j == li:
            cols.append(label)
            continue
        if split == "conflict":
            cols.append(rand)
        else:
            corr = getattr(cfg, f"{name}_corr")
            cols.append(torch.where(copy < corr, label, rand))
    f = torch.stack(cols, 1)
    if split == "conflict":  # shape and texture always disagree
        si, ti = 0, 1
        offset = torch.randint(1, 10, (n,), generator=g)
        if li == ti:
            f[:, si] = (f[:, ti] + offset) % 10
        else:
            f[:, ti] = (f[:, si] + offset) % 10
    return f


def render(
    factors: Tensor,
    centre: Tensor,
    radius: Tensor,
    angle: Tensor,
    phase: Tensor,
    size: int,
    contrast: float,
    period_px: float,
    background: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Render a batch from its parameters (vectorised; loops only over the 10 classes).

    Args:
        factors: (B, 3) int64 shape, texture, colour.
        centre: (B, 2) float (x, y) in pixels; radius: (B,) pixels; angle: (B,) radians;
        phase: (B, 2) texture offset in pixels.
    Returns:
        images uint8 (B, 3, S, S) and masks bool (B, S, S).
    """
    B, S = factors.shape[0], size
    coords = torch.arange(S, dtype=torch.float32) + 0.5  # pixel centres
    gx = coords.view(1, 1, S)
    gy = coords.view(1, S, 1)
    dx = gx - centre[:, 0].view(B, 1, 1)  # (B, 1, S)
    dy = centre[:, 1].view(B, 1, 1) - gy  # (B, S, 1), y up
    c = (torch.cos(angle) / radius).view(B, 1, 1)
    s = (torch.sin(angle) / radius).view(B, 1, 1)
    u = dx * c + dy * s  # rotate by -angle, scale to unit coordinates -> (B, S, S)
    v = dy * c - dx * s
    mask = torch.zeros(B, S, S, dtype=torch.bool)
    shape = factors[:, 0]
    for k in range(len(SHAPES)):
        idx = (shape == k).nonzero().squeeze(1)
        if len(idx):
            mask[idx] = _shape_mask(k, u[idx], v[idx])

    pattern = torch.empty(B, S, S)
    texture = factors[:, 1]
    X = gx + phase[:, 0].view(B, 1, 1)  # (B, 1, S)
    Y = gy + phase[:, 1].view(B, 1, 1)  # (B, S, 1)
    for k in range(len(TEXTURES)):
        idx = (texture == k).nonzero().squeeze(1)
        if not len(idx):
            continue
        n = len(idx)
        Xk, Yk = X[idx], Y[idx]  # (n, 1, S) and (n, S, 1): patterns broadcast to (n, S, S)
        R = Ik = Jk = None
        if TEXTURES[k] == "rings":
            R = torch.sqrt(dx[idx] ** 2 + dy[idx] ** 2)
        if TEXTURES[k] == "noise":
            Ik, Jk = torch.floor(Xk).long(), torch.floor(Yk).long()
        pattern[idx] = _texture(k, Xk, Yk, period_px, R, Ik, Jk).expand(n, S, S)

    # 255 * clip(colour + contrast * pattern), rounded half up, composited in uint8.
    colour = (COLOUR_RGB[factors[:, 2]] * 255.0 + 0.5).view(B, 3, 1, 1)
    fg = (pattern.mul_(contrast * 255.0).unsqueeze(1) + colour).clamp_(0.0, 255.0)
    m8 = mask.unsqueeze(1).view(torch.uint8)  # multiplying by 0/1 is far cheaper than torch.where here
    images = fg.to(torch.int16).to(torch.uint8).mul_(m8)  # via int16: 2x faster than float -> uint8
    bg = int(background * 255.0 + 0.5)
    if bg:
        images.add_((1 - m8) * bg)
    return images, mask


def boxes_from_masks(masks: Tensor) -> Tensor:
    """(N, 4) float32 ``(x0, y0, x1, y1)`` bounding boxes of bool masks (x1/y1 exclusive)."""
    N, H, W = masks.shape
    m8 = masks.view(torch.uint8)
    cols = m8.sum(1, dtype=torch.int32) > 0  # (N, W); faster than any() on CPU
    rows = m8.sum(2, dtype=torch.int32) > 0  # (N, H)
    x0 = cols.to(torch.uint8).argmax(1)
    x1 = W - cols.flip(1).to(torch.uint8).argmax(1)
    y0 = rows.to(torch.uint8).argmax(1)
    y1 = H - rows.flip(1).to(torch.uint8).argmax(1)
    empty = ~cols.any(1)
    box = torch.stack([x0, y0, x1, y1], 1).float()
    box[empty] = 0.0
    return box


def _parallel_chunks(work, starts: list[int]) -> None:
    """Run ``work(start)`` for every chunk on a pool of threads, one intra-op thread each.

    Torch kernels release the GIL, so chunk-level threads use all cores without the per-op
    barriers of intra-op parallelism, which collapse when the cores are shared (measured: 1
    intra-op thread is 2-3x faster than 2 on a loaded 2-core machine).
    """
    before = torch.get_num_threads()
    workers = min(len(starts), before, os.cpu_count() or 1)
    if before > 1:
        torch.set_num_threads(1)
    try:
        if workers <= 1:
            for a in starts:
                work(a)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(work, starts))
    finally:
        if before > 1:
            torch.set_num_threads(before)


def generate(cfg: TrifeatureConfig | None = None, split: str = "train", n: int | None = None) -> ImageSet:
    """Generate one split of the procedural set (deterministic from ``cfg.seed`` and ``split``).

    ``n`` overrides the split's configured size.
    """
    cfg = cfg or TrifeatureConfig()
    if split not in SPLITS:
        raise UserError(f"trifeature: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    n = cfg.n(split) if n is None else int(n)
    g = _split_generator(cfg.seed, split)
    S = cfg.size
    factors = _draw_factors(cfg, split, n, g)
    radius = (cfg.scale_min + (cfg.scale_max - cfg.scale_min) * torch.rand(n, generator=g)) * S
    centre = radius.unsqueeze(1) + torch.rand(n, 2, generator=g) * (S - 2 * radius).unsqueeze(1)
    angle = torch.rand(n, generator=g) * (2 * math.pi)
    period_px = max(2.0, cfg.period * S)
    phase = torch.rand(n, 2, generator=g) * (_NOISE_TILE * period_px)
    phase = torch.floor(phase)  # whole pixels, so that the noise texture is exact

    images = torch.empty(n, 3, S, S, dtype=torch.uint8)
    masks = torch.empty(n, S, S, dtype=torch.bool)
    boxes = torch.empty(n, 4, dtype=torch.float32)
    # chunks of ~1M pixels, at least one per core (the output does not depend on chunking)
    chunk = max(8, min(_CHUNK * 32 * 32 // (S * S), -(-n // (os.cpu_count() or 1))))

    def work(a: int) -> None:
        b = min(n, a + chunk)
        images[a:b], masks[a:b] = render(
            factors[a:b], centre[a:b], radius[a:b], angle[a:b], phase[a:b], S, cfg.contrast, period_px, cfg.background
        )
        boxes[a:b] = boxes_from_masks(masks[a:b])

    _parallel_chunks(work, list(range(0, n, chunk)))
    li = FACTOR_NAMES.index(cfg.label)
    meta = {"source": "trifeature", "split": split, "options": asdict(cfg)}
    return ImageSet(
        images=images,
        labels=factors[:, li].clone(),
        classes=list(FACTOR_CLASSES[cfg.label]),
        name=f"trifeature/{split}",
        factors=factors,
        factor_names=FACTOR_NAMES,
        masks=masks,
        boxes=boxes,
        meta=meta,
    )
