"""Evaluation preprocessing of one decoded image, named by :data:`robustlens.names.PREPROCESSING`.

``"squash"`` (the default): resize both sides to ``size x size`` (the aspect ratio is not
kept), what every reader did before there was a choice.

``"res256crop224"``: RobustBench's ``Res256Crop224`` (Croce et al. 2021,
``robustbench/data.py``: ``transforms.Resize(256)``, ``transforms.CenterCrop(224)``), the
standard ImageNet evaluation transform of torchvision's reference scripts, written with PIL
exactly as torchvision applies it to a PIL image:

1. the shorter side to 256, the longer to ``int(256 * long / short)`` (torchvision's
   ``_compute_resized_output_size``), bilinear (PIL's filter, which is antialiased);
2. the centre ``224 x 224`` crop, its corner at ``int(round((h - 224) / 2))``,
   ``int(round((w - 224) / 2))`` (torchvision's ``center_crop``; Python rounds halves to even).

A ``size`` other than 224 then resizes the crop to ``size x size`` with ``resample`` (a square
to a square: no distortion), for quick runs at a lower resolution.
"""

from __future__ import annotations

from robustlens.errors import UserError
from robustlens.names import PREPROCESSING

RESIZE_SHORT = 256
CROP = 224


def check_preprocessing(name: str | None, where: str = "preprocessing") -> str:
    """``name`` (``None`` = ``"squash"``) if it is one of :data:`~robustlens.names.PREPROCESSING`."""
    if name is None:
        return "squash"
    if name not in PREPROCESSING:
        from robustlens.registry import unknown_name

        raise unknown_name("preprocessing", name, PREPROCESSING, key=where)
    return name


def res256_size(width: int, height: int) -> tuple[int, int]:
    """``(width, height)`` after torchvision's ``Resize(256)``: the shorter side to 256."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(RESIZE_SHORT * long / short)
    return (RESIZE_SHORT, new_long) if width <= height else (new_long, RESIZE_SHORT)


def centre_box(width: int, height: int, crop: int = CROP) -> tuple[int, int, int, int]:
    """The ``(left, top, right, bottom)`` of torchvision's ``CenterCrop(crop)``."""
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    return left, top, left + crop, top + crop


def apply_preprocessing(im, preprocessing: str, size: int | None, resample):
    """PIL image ``im`` preprocessed by ``preprocessing`` to ``size`` (see the module docstring);
    ``resample`` is a PIL filter."""
    from PIL import Image

    if preprocessing == "res256crop224":
        w, h = im.size
        if min(w, h) < 1:
            raise UserError(f"image of size {w}x{h}: cannot resize")
        im = im.resize(res256_size(w, h), Image.Resampling.BILINEAR).crop(centre_box(*res256_size(w, h)))
        if size is not None and size != CROP:
            im = im.resize((size, size), resample)
        return im
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), resample)
    return im
