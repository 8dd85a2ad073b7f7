"""Arguments and helpers shared by the subcommands, each declared once so it is spelled the same everywhere.

Data (``--data``, ``--format``, ``--size``), threat (``--threat``, ``--eps``), device, seed,
checkpoint loading and the display names of several ``--checkpoint`` files. A default that
differs between subcommands is a parameter of the helper.
"""

from __future__ import annotations

import argparse

import torch

from robustlens.errors import UserError


def add_data_args(p: argparse.ArgumentParser, required: bool = True, flag: str = "--data") -> None:
    p.add_argument(
        flag,
        required=required,
        metavar="SOURCE",
        help="'trifeature' (procedural; options as trifeature:key=value,...) or a folder / archive / file",
    )
    add_format_size_args(p)


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
def add_format_size_args(p: argparse.ArgumentParser) -> None:
    """``--format`` and ``--size``, the on-disk reading options of a data source."""
    p.add_argument("--format", default=None, help="force the on-disk format instead of detecting it")
    p.add_argument("--size", type=positive_int, default=None, help="resize images to SIZE x SIZE on load")


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
    """``(model, sidecar)`` of a checkpoint, in eval mode on ``device``; a missing file is one line."""
    from pathlib import Path

    from robustlens.models.checkpoint import load_checkpoint

    if not Path(path).exists():
        raise UserError(f"{flag} {path}: file not found")
    return load_checkpoint(path, device=device)


def checkpoint_names(checkpoints: list[str], names: list[str] | None, *, numbered: bool = False,
                     hint: str = "") -> list[str]:
    """A display name per checkpoint: ``--name`` (one per ``--checkpoint``), else the file stem.

    Repeated names are made unique: ``a``, ``a#2``, ``a#3``; with ``numbered``, every name gets
    its position (``a_0``, ``a_1``) as soon as one repeats.
    """
    from pathlib import Path

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
