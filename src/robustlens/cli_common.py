"""Arguments shared by several subcommands, so they are spelled the same everywhere."""

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
    p.add_argument("--format", default=None, help="force the on-disk format instead of detecting it")
    p.add_argument("--size", type=positive_int, default=None, help="resize images to SIZE x SIZE on load")


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
