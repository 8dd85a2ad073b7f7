"""``robustlens study [SPEC.toml]``: the whole STD vs ADV comparison, cached and resumable."""

from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", default=None,
                   help="study spec (TOML); default: the embedded procedural-set study (examples/trifeature.toml)")
    p.add_argument("--name", default=None, help="override the spec's name (the run folder runs/<name>/)")
    p.add_argument("--out-dir", default=None, help="override the spec's out_dir (default runs)")
    p.add_argument("--device", default=None, help="override the spec's device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--only", default=None, metavar="STAGE[,STAGE]",
                   help="run only these stages and what they depend on (e.g. robustness); the rest is left out of the report")
    p.add_argument("--print-spec", action="store_true", help="print the fully resolved spec as JSON and exit")


def apply_overrides(spec, args: argparse.Namespace, name: str | None) -> None:
    """``--name`` (checked: it names a folder), ``--out-dir`` and ``--device`` onto ``spec``;
    shared by ``robustlens study`` and ``robustlens sweep``."""
    from robustlens.errors import UserError
    from robustlens.study.spec import is_folder_name

    if name:
        if not is_folder_name(name):
            raise UserError(f"--name: use letters, digits, '_', '-', '.' only, not only dots (it names a folder), got {name!r}")
        spec.name = name
    if args.out_dir:
        spec.out_dir = args.out_dir
    if args.device:
        spec.device = args.device


def run(args: argparse.Namespace) -> int:
    import json

    from robustlens.study import load_spec, run_study

    spec = load_spec(args.spec)
    apply_overrides(spec, args, args.name)
    if args.print_spec:
        print(json.dumps(spec.to_dict(), indent=2))
        return 0
    run_study(spec, only=[n.strip() for n in args.only.split(",") if n.strip()] if args.only else None)
    return 0
