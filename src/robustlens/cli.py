"""The ``robustlens`` command: one entry point, one subcommand per package.

Each subcommand lives in its package's ``cli.py`` as two functions:
``configure(parser)`` adds its arguments and ``run(args) -> int`` does the work.
A :class:`~robustlens.errors.UserError` is printed as one line (no traceback), exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from robustlens import __version__
from robustlens.errors import UserError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "study": ("robustlens.study.cli", "run the whole STD vs ADV comparison and write report.html + results.json"),
    "sweep": ("robustlens.study.sweep_cli", "the regime map alone: STD and ADV over a grid of texture amplitude x shape agreement"),
    "data": ("robustlens.data.cli", "describe a data source (counts per split and class, resolution) and write a sample grid"),
    "train": ("robustlens.train.cli", "train a model: standard, FGSM, FGSM-RS, PGD or TRADES"),
    "attack": ("robustlens.attacks.cli", "measure clean and robust accuracy (FGSM, PGD, APGD, Square, AutoAttack-style)"),
    "explain": ("robustlens.explain.cli", "saliency maps, feature visualisation, sanity checks, localisation, generation"),
    "probe": ("robustlens.probes.cli", "accuracy under blur, median, colour reversal, stylisation...; cue-conflict bias; neurons"),
    "transfer": ("robustlens.transfer.cli", "late fusion of STD/ADV backbones on target data sets"),
    "construct": ("robustlens.transfer.construct_cli", "build robust / non-robust data sets (Ilyas et al. 2019) and train on them"),
    "models": ("robustlens.models.cli", "list the architectures of the model zoo"),
}


def _selected_command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first token that is not an option), if any."""
    for token in argv:
        if not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just that subcommand's module is imported and configured.

    Importing every subcommand (and torch with them) costs seconds, which would dominate a fully
    cached ``robustlens study`` rerun; so only the command being run is configured.
    """
    parser = argparse.ArgumentParser(
        prog="robustlens",
        description="What do adversarially robust models look at? Compare STD and ADV classifiers side by side.",
    )
    parser.add_argument("--version", action="version", version=f"robustlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            importlib.import_module(module).configure(p)
        p.set_defaults(_module=module, _name=name)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    command = _selected_command(argv)
    parser = build_parser(only=command or "")
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    mod = importlib.import_module(args._module)
    try:
        return int(mod.run(args) or 0)
    except UserError as e:
        print(f"robustlens {args._name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robustlens {args._name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
