"""``robustlens attack``: clean and robust accuracy of a checkpoint under an attack.

    robustlens attack --checkpoint runs/adv/model.safetensors --data trifeature --split test \
        --threat linf --eps 8/255 --attack pgd --steps 50 --restarts 10 --out results.json

Prints clean and robust accuracy (with a progress bar) and writes JSON with the config,
per-attack robust accuracy, mean perturbation norm, seconds and versions.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from robustlens.names import AUTOATTACK_VERSIONS

from robustlens.cli_common import (
    add_data_args,
    add_device_arg,
    add_overwrite_arg,
    add_threat_args,
    check_out,
    load_model,
    match_classes,
    positive_int,
    resolve_device,
)


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a robustlens checkpoint (.safetensors with its .json sidecar)")
    add_data_args(p)
    p.add_argument("--split", default="test", help="data split to evaluate (default: test)")
    p.add_argument("--n", type=positive_int, default=None, help="evaluate N images (a seeded sample of the split)")
    add_threat_args(p, eps_default="8/255", eps_help="radius of the threat model; fractions like 8/255 work (default 8/255)")
    p.add_argument(
        "--attack",
        default="pgd",
        help="fgsm, pgd, apgd-ce, apgd-t, apgd-dlr, fab, fab-t, square or autoattack (standard: apgd-ce, apgd-t, fab-t, square) (default: pgd)",
    )
    p.add_argument("--steps", type=_nonneg_int, default=None, help="iterations (default: pgd 10, apgd and fab 100); queries for square use --queries")
    p.add_argument("--step-size", default=None, help="PGD / FGSM step size (default: pgd 2.5*eps/steps; fractions work)")
    p.add_argument("--restarts", type=positive_int, default=None, help="random restarts, worst case kept (default 1)")
    p.add_argument("--loss", default=None, choices=["ce", "cw"], help="PGD / FGSM loss (default: ce)")
    p.add_argument("--random-start", action="store_true", default=None, help="FGSM: start from a random point (Wong et al. 2020)")
    p.add_argument("--early-stop", action="store_true", default=None, help="PGD: stop updating an example once misclassified")
    p.add_argument("--queries", type=positive_int, default=None, help="Square attack queries (default 5000)")
    p.add_argument("--version", default=None, choices=list(AUTOATTACK_VERSIONS),
                   help="autoattack: the authors' version: standard (APGD-CE, APGD-T 9 targets, FAB-T 9 targets, Square 5,000 "
                        "queries), plus, rand (APGD-CE and APGD-DLR, EOT over 20 draws) or custom (--members, --steps, --queries, "
                        "--targets); default standard, or custom when one of those is given")
    p.add_argument("--members", default=None, help="autoattack custom: comma-separated members, e.g. apgd-ce,apgd-t")
    p.add_argument("--targets", type=positive_int, default=None, help="autoattack custom / apgd-t / fab-t: target classes (default 9)")
    p.add_argument("--check-steps", action="store_true", help="also run at steps//2 and warn if robust accuracy rises with steps")
    p.add_argument("--no-checks", action="store_true", help="skip the randomness / softmax / gradient checks")
    p.add_argument("--batch-size", type=positive_int, default=256, help="attack batch size (default 256)")
    add_device_arg(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the --n sample of the split (the study: its spec's seed; default 0)")
    p.add_argument("--attack-seed", type=int, default=None,
                   help="seed of the attack's random draws (the study: spec seed x 1000 + 11, printed in its report; default: --seed)")
    p.add_argument("--out", default=None, help="write the results as JSON to this path")
    add_overwrite_arg(p, "an existing --out file")


# command-line flag -> attack option. A flag left unset (None) passes nothing, so the attack
# keeps the default its configuration dataclass declares; a flag the attack has no option for
# is not passed (e.g. --queries for pgd).
_FLAG_OPTIONS = {"steps": "steps", "restarts": "restarts", "loss": "loss", "random_start": "random_start",
                 "early_stop": "early_stop", "queries": "n_queries", "version": "version", "targets": "n_target_classes"}


def _attack_options(args: argparse.Namespace, attack: str, step_size: float | None) -> dict:
    """The keyword arguments of :func:`~robustlens.attacks.evaluate.robust_accuracy` that ``attack`` takes."""
    from robustlens.attacks import ATTACKS
    from robustlens.errors import UserError

    given = {opt: getattr(args, flag) for flag, opt in _FLAG_OPTIONS.items() if getattr(args, flag) is not None}
    if step_size is not None:
        given["step_size"] = step_size
    if "loss" in given and attack.startswith("apgd"):
        raise UserError(f"--loss: {attack}'s loss is part of its name (apgd-ce: cross-entropy, apgd-dlr: DLR); --loss is for pgd and fgsm")
    if args.members is not None:
        if attack != "autoattack":
            raise UserError(f"--members: only for --attack autoattack, not {attack}")
        given["attacks"] = tuple(m.strip() for m in args.members.split(",") if m.strip())
    if args.version is not None and attack != "autoattack":
        raise UserError(f"--version: only for --attack autoattack, not {attack}")
    accepted = ATTACKS.get(attack).options()
    kw = {k: v for k, v in given.items() if k in accepted}
    if args.check_steps:
        kw["check_steps"] = True
    return kw


def _print_result(args, data, model, meta: dict, threat, attack: str, res: dict) -> None:
    print(f"{data.name or args.data} ({res['n']} images), {meta.get('arch', type(model).__name__)}, {threat.norm} eps={args.eps}")
    print(f"clean accuracy   {100 * res['clean_accuracy']:6.2f}%")
    if attack == "autoattack":
        for name, acc in res["per_attack"].items():
            print(f"  after {name:8s} {100 * acc:6.2f}%")
    print(f"robust accuracy  {100 * res['robust_accuracy']:6.2f}%  ({res['label']}, {res['seconds']:.1f} s)")


def _results_json(args, meta: dict, threat, attack: str, device, res: dict) -> dict:
    """The ``--out`` record: the config, the model, the metrics, the warnings and the versions."""
    from robustlens.io import versions

    return {
        "command": "attack",
        "config": {
            "checkpoint": str(args.checkpoint),
            "data": args.data,
            "split": args.split,
            "n": res["n"],
            "threat": threat.to_dict(),
            "eps_text": str(args.eps),
            "attack": attack,
            "options": res["options"],
            "batch_size": args.batch_size,
            "device": str(device),
            "seed": args.seed,
            "attack_seed": res["attack_seed"],
            "label": res["label"],
            "ensemble": res.get("ensemble"),
            "fab_t": ("included" if "fab-t" in res["ensemble"] else "omitted") if res.get("ensemble") else None,
        },
        "model": {"arch": meta.get("arch"), "num_classes": meta.get("num_classes")},
        "metrics": {
            "clean_accuracy": res["clean_accuracy"],
            "robust_accuracy": res["robust_accuracy"],
            "per_attack": res["per_attack"],
            "mean_norm": res["mean_norm"],
            "mean_norm_fooled": res["mean_norm_fooled"],
            "seconds": res["seconds"],
        },
        "warnings": res["warnings"],
        "versions": versions(),
    }


def _label(attack) -> str:
    """What ran, as the output names it (an ensemble: :meth:`AutoAttack.label`)."""
    from robustlens.attacks.autoattack import AutoAttack

    if isinstance(attack, AutoAttack):
        return attack.label()
    return ", ".join(f"{k}={v}" for k, v in asdict(attack).items()).join((f"{attack.name} (", ")"))


def run(args: argparse.Namespace) -> int:
    from robustlens.attacks.autoattack import AutoAttack
    from robustlens.attacks.base import make_attack
    from robustlens.attacks.evaluate import normalize_attack, robust_accuracy
    from robustlens.data import load
    from robustlens.errors import UserError
    from robustlens.io import write_json_atomic
    from robustlens.threat import make_threat, parse_eps

    # Everything that can be checked without work is checked first.
    if args.out:
        check_out(args.out, overwrite=args.overwrite, folder=False)
    attack = normalize_attack(args.attack)
    threat = make_threat(args.threat, args.eps)
    step_size = parse_eps(args.step_size, name="--step-size") if args.step_size is not None else None
    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, device)
    data = load(args.data, split=args.split, size=args.size, format=args.format)
    if args.n is not None:
        data = data.sample(args.n, seed=args.seed)
    data = match_classes(data, meta, model.num_classes, checkpoint=f"--checkpoint {args.checkpoint}")
    kw = _attack_options(args, attack, step_size)
    check_steps = kw.pop("check_steps", False)
    configured = make_attack(attack, **kw)
    attack_seed = args.seed if args.attack_seed is None else args.attack_seed
    res = robust_accuracy(
        model, data, threat, attack=configured, batch_size=args.batch_size, device=device, seed=attack_seed,
        progress=True, checks_enabled=not args.no_checks, check_steps=check_steps,
    )
    res.update(options=dict(kw, check_steps=True) if check_steps else kw, attack_seed=attack_seed, label=_label(configured))
    if isinstance(configured, AutoAttack):
        res["ensemble"] = [name for name, _ in configured.members()]
    _print_result(args, data, model, meta, threat, attack, res)
    if args.out:
        write_json_atomic(args.out, _results_json(args, meta, threat, attack, device, res))
        print(f"wrote {args.out}")
    return 0
