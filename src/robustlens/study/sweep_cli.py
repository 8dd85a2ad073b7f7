"""``robustlens sweep [SPEC.toml]``: the regime map alone (issue 15).

Runs the study's opt-in ``regime`` stage (:mod:`robustlens.study.stages.regime`) and nothing
else: over a grid of texture amplitude (in units of the spec's L-inf eps) x shape agreement,
a small STD and a small ADV (FGSM-RS) model per cell, clean and PGD accuracy, shape bias and
the claims they decide, as heat maps. The grid and the recipe come from the spec's
``[stages.regime]`` (defaults in ``default.toml``), each overridable here. The stage is the
study's own (same hash), so it is cached and resumes a killed run at the next cell, and a
later full ``robustlens study`` with the same regime settings reuses it.
"""

from __future__ import annotations

import argparse

#: flag -> RegimeSpec field, for the integers of the recipe
_COUNTS = ("n_train", "n_test", "epochs", "width", "attack_steps")


def _floats(text: str) -> list[float]:
    from robustlens.errors import UserError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"expected comma-separated numbers, got {text!r}") from None


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", default=None,
                   help="study spec (TOML) whose data, threat and [stages.regime] to use; default: the embedded study")
    p.add_argument("--amplitudes", default=None,
                   help="texture amplitudes in units of eps, comma-separated (default 1,1.9,3)")
    p.add_argument("--agreements", default=None,
                   help="shares of images whose shape agrees with the class, in [0.1, 1] (default 0.7,0.865,1)")
    for key in _COUNTS:
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"per cell: {key.replace('_', ' ')}")
    p.add_argument("--name", default=None, help="the run folder runs/<name>/ (default: <spec name>-regime)")
    p.add_argument("--out-dir", default=None, help="override the spec's out_dir (default runs)")
    p.add_argument("--device", default=None, help="override the spec's device (auto, cpu, cuda, cuda:N)")


def run(args: argparse.Namespace) -> int:
    from robustlens.errors import UserError
    from robustlens.study import load_spec, run_study
    from robustlens.study.cli import apply_overrides
    from robustlens.study.spec import check_regime

    spec = load_spec(args.spec)
    rg = spec.stages.regime
    rg.enabled = True
    for flag in ("amplitudes", "agreements"):
        text = getattr(args, flag)
        if text is not None:
            try:
                setattr(rg, flag, _floats(text))
            except UserError as e:
                raise UserError(f"--{flag}: {e}") from None
    for key in _COUNTS:
        if getattr(args, key) is not None:
            setattr(rg, key, getattr(args, key))
    check_regime(spec)
    apply_overrides(spec, args, args.name or f"{spec.name}-regime")
    run_study(spec, only=["regime"])
    return 0
