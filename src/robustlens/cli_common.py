"""Arguments and helpers shared by the subcommands, each declared once so it is spelled the same everywhere.

Data (``--data``, ``--format``, ``--size``), threat (``--threat``, ``--eps``), device, seed,
checkpoint loading and the display names of several ``--checkpoint`` files. A default that
differs between subcommands is a parameter of the helper.
"""

from __future__ import annotations

import argparse

import torch

from robustlens.errors import UserError


def add_data_args(p: argparse.ArgumentParser, required: bool = True, flag: str = "--data", *,
                  preprocessing: bool = False) -> None:
    p.add_argument(
        flag,
        required=required,
        metavar="SOURCE",
        help="'trifeature' (procedural; options as trifeature:key=value,...) or a folder / archive / file",
    )
    add_format_size_args(p, preprocessing=preprocessing)


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def add_seed_arg(p: argparse.ArgumentParser, default: int = 0) -> None:
    p.add_argument("--seed", type=int, default=default, help=f"random seed (default {default})")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _number(text: str, *, positive: bool) -> float:
    import math

    want = "a positive number" if positive else "a number >= 0"
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (a learning rate, a step size)."""
    return _number(text, positive=True)


def nonneg_float(text: str) -> float:
    """An argparse type: a finite number >= 0 (a weight decay)."""
    return _number(text, positive=False)


def image_size(text: str) -> int:
    """``--size``: a positive integer up to :data:`robustlens.data.source.MAX_SIZE`; a larger
    one is refused with what it would cost in memory."""
    from robustlens.data.source import MAX_SIZE, size_memory

    v = positive_int(text)
    if v > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_SIZE}, got {v} ({size_memory(v)})")
    return v


def resolve_device(name: str | None) -> torch.device:
    """``None`` -> cuda when available, else cpu; a CUDA name on a CPU machine is an error."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: unknown device {name!r}; expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device: {name!r} asked for but no CUDA device is available")
    return dev


# ------------------------------------------------------------------ data, threat, checkpoints
def add_format_size_args(p: argparse.ArgumentParser, *, preprocessing: bool = False) -> None:
    """``--format`` and ``--size``, the on-disk reading options of a data source; with
    ``preprocessing``, ``--preprocessing`` too (for a subcommand that passes it to ``load``)."""
    p.add_argument("--format", default=None, help="force the on-disk format instead of detecting it")
    p.add_argument("--size", type=image_size, default=None, help="resize images to SIZE x SIZE on load")
    if preprocessing:
        from robustlens.names import PREPROCESSING

        p.add_argument("--preprocessing", default="squash", choices=PREPROCESSING,
                       help="squash (both sides to --size, default) or res256crop224 (RobustBench's ImageNet evaluation: "
                            "shorter side 256, centre crop 224; then --size if other than 224)")


def add_threat_args(
    p: argparse.ArgumentParser,
    *,
    eps_default: str | None,
    eps_help: str,
    threat_default: str = "linf",
    threat_help: str = "threat model: linf, l2 or l1 (default: linf)",
    threat_flag: str = "--threat",
    eps_flag: str = "--eps",
) -> None:
    """A threat model and its radius (``eps`` stays text, so ``8/255`` works; see :func:`robustlens.threat.make_threat`)."""
    p.add_argument(threat_flag, default=threat_default, help=threat_help)
    p.add_argument(eps_flag, default=eps_default, help=eps_help)


def load_model(path: str, device, *, flag: str = "--checkpoint"):
    """``(model, sidecar)`` of a checkpoint, in eval mode on ``device``; a missing file is one line.
    ``NAME@PATH`` names a published file by its catalogue entry (robustlens models --catalogue)."""
    from pathlib import Path

    from robustlens.layout import fast_layout
    from robustlens.models.checkpoint import load_checkpoint

    if not Path(path).exists() and not Path(path.partition("@")[2] or path).exists():
        raise UserError(f"{flag} {path}: file not found")
    model, meta = load_checkpoint(path, device=device)
    return fast_layout(model, device), meta  # the command owns the model: its fastest layout (robustlens.layout)


def checkpoint_names(checkpoints: list[str], names: list[str] | None, *, numbered: bool = False,
                     hint: str = "") -> list[str]:
    """A display name per checkpoint: ``--name`` (one per ``--checkpoint``), else the file stem.

    Repeated names are made unique: ``a``, ``a#2``, ``a#3``; with ``numbered``, every name gets
    its position (``a_0``, ``a_1``) as soon as one repeats.
    """
    from pathlib import Path

    _check_display_names(names)
    if names and len(names) != len(checkpoints):
        raise UserError(f"--name: {len(names)} names for {len(checkpoints)} checkpoints{hint}")
    out = list(names) if names else [Path(c).stem for c in checkpoints]
    if numbered:
        return [f"{n}_{i}" for i, n in enumerate(out)] if len(set(out)) != len(out) else out
    seen: dict[str, int] = {}
    unique = []
    for n in out:
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return unique


# ------------------------------------------------------------------ outputs, names, class sets
def add_overwrite_arg(p: argparse.ArgumentParser, what: str = "the results in --out") -> None:
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} (without it, a finished result is never replaced)")


def check_out(path: str, *, overwrite: bool, results: tuple[str, ...] = (), folder: bool = True,
              flag: str = "--out", hint: str = "") -> "Path":
    """Before any work: ``path`` (a folder, or a file with ``folder=False``) can be written, and
    holds no earlier result (``results``: the files a finished run leaves) unless ``overwrite``.

    So a long computation never ends in a crash on an unwritable path, and a finished run is
    never silently replaced."""
    import tempfile
    from pathlib import Path

    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p}: exists and is not a folder; expected an output folder")
    if not folder and p.is_dir():
        raise UserError(f"{flag} {p}: is a folder; expected a file path")
    found = [p / r for r in results if (p / r).exists()] if folder else [p] * p.exists()
    if found and not overwrite:
        raise UserError(f"{flag} {p}: {'holds' if folder else 'is'} a finished result ({found[0].name}); "
                        f"pass --overwrite to replace it{hint}, or choose another {'folder' if folder else 'path'}")
    base = p if folder else p.parent  # the nearest folder that exists is where the first write goes
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise UserError(f"{flag} {p}: cannot write there ({base} is a file, not a folder)")
    try:
        with tempfile.TemporaryFile(dir=base):  # creates nothing that stays
            pass
    except OSError as e:
        raise UserError(f"{flag} {p}: cannot write to {base} ({e.strerror or e})") from None
    return p


def _check_display_names(names: list[str] | None, flag: str = "--name") -> None:
    """A display name names files (``saliency_<name>.png``): letters, digits, '_', '-', '.', not only dots."""
    import re

    for n in names or []:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", n) or set(n) == {"."}:  # the rule of study.spec.is_folder_name
            raise UserError(f"{flag} {n!r}: use letters, digits, '_', '-', '.' only, not only dots (it names files)")


def match_classes(data, meta: dict, num_outputs: int, *, flag: str = "--data", checkpoint: str = "--checkpoint"):
    """``data`` with labels in the model's class order: the same names, or a permutation (or a
    subset) of the checkpoint's class names, mapped by name; anything else is refused (a
    10-class model on a 2-class folder would otherwise score against the wrong labels).

    A checkpoint without class names must have exactly the data's class count."""
    import dataclasses

    names = [str(c) for c in (meta.get("classes") or [])]
    if not names:
        if num_outputs != data.num_classes:
            raise UserError(f"{flag}: {data.num_classes} classes but {checkpoint} predicts {num_outputs} and names none; "
                            "give the checkpoint its class names (robustlens models --import ... --classes)")
        return data
    if list(data.classes) == names:
        return data
    missing = [c for c in data.classes if c not in names]
    if missing:
        raise UserError(f"{flag}: classes {', '.join(map(repr, missing[:5]))} are not among the {len(names)} classes "
                        f"{checkpoint} predicts ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})")
    index = torch.tensor([names.index(c) for c in data.classes], dtype=torch.long)
    print(f"{flag}: classes mapped by name onto {checkpoint}'s {len(names)} classes", flush=True)
    return dataclasses.replace(data, labels=index[data.labels.long()].to(data.labels.dtype), classes=names)
