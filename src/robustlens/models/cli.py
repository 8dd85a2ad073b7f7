"""``robustlens models``: list the zoo, convert foreign weights, describe a checkpoint.

* ``robustlens models [--params]`` lists the architectures (optionally with parameter counts).
* ``robustlens models --import SRC --arch ARCH --out DST.safetensors [--num-classes N]
  [--mean a,b,c --std a,b,c] [--classes FILE|a,b,...]`` converts a torchvision / robustness /
  RobustBench weights file (read with ``torch.load(weights_only=True)`` only) into a robustlens
  checkpoint (safetensors + JSON sidecar).
* ``robustlens models --show CKPT.safetensors`` loads a checkpoint and prints its sidecar summary.
* ``robustlens models --catalogue [--json]`` prints the catalogue of published models
  (:mod:`robustlens.models.catalogue`).
* ``robustlens models --import NAME --file PATH --out DST.safetensors`` converts a published
  file named by its catalogue entry (keys checked against the entry; its normalisation,
  classes, preprocessing and threat recorded in the sidecar).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from robustlens.cli_common import add_overwrite_arg, check_out


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", action="store_true", help="also count parameters (builds each model)")
    p.add_argument("--import", dest="import_src", metavar="SRC", default=None,
                   help="foreign weights file to convert (.pt/.pth/.bin/.safetensors); with --file, a catalogue entry NAME")
    p.add_argument("--file", default=None, metavar="PATH", help="the published weights of catalogue entry --import NAME")
    p.add_argument("--catalogue", action="store_true", help="print the catalogue of published models")
    p.add_argument("--json", action="store_true", help="with --catalogue: print it as JSON (every field)")
    p.add_argument("--arch", default=None, help="architecture of the weights given to --import")
    p.add_argument("--out", default=None, metavar="DST", help="where --import writes the checkpoint (DST.safetensors + DST.json)")
    p.add_argument("--num-classes", type=int, default=None, help="number of outputs (default: read from the file's classifier head)")
    p.add_argument("--mean", default=None, help="input normalisation mean, e.g. 0.485,0.456,0.406 (default: from the file, else the arch default)")
    p.add_argument("--std", default=None, help="input normalisation std, e.g. 0.229,0.224,0.225")
    p.add_argument("--classes", default=None, help="class names: a text file with one per line, or a comma-separated list")
    add_overwrite_arg(p, "an existing --import destination")
    p.add_argument("--show", default=None, metavar="CKPT", help="load a robustlens checkpoint and print its summary")


def _read_classes(text: str | None) -> list[str] | None:
    from robustlens.errors import UserError

    if text is None:
        return None
    path = Path(text)
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    elif "," in text:
        names = [c.strip() for c in text.split(",") if c.strip()]
    else:
        raise UserError(f"--classes: {text!r} is neither a file nor a comma-separated list")
    if not names:
        raise UserError(f"--classes: no class names in {text!r}")
    return names


def _fmt(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _check_import_out(args: argparse.Namespace) -> Path:
    from robustlens.errors import UserError

    if not args.out:
        raise UserError("--import needs --out DST.safetensors")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out: expected a .safetensors path, got {out}")
    check_out(str(out), overwrite=args.overwrite, folder=False)
    return out


def _import_published(args: argparse.Namespace) -> int:
    """``--import NAME --file PATH``: a catalogue entry's published file -> our checkpoint."""
    from robustlens.errors import UserError
    from robustlens.models.catalogue import entry, import_published, sidecar_meta
    from robustlens.models.checkpoint import save_checkpoint, sidecar_path

    e = entry(args.import_src)
    for flag in ("arch", "num_classes", "mean", "std", "classes"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag.replace('_', '-')}: not with --import NAME --file (the catalogue entry {e.name} fixes it)")
    out = _check_import_out(args)
    model = import_published(e.name, args.file)
    save_checkpoint(out, model, sidecar_meta(e, args.file, model.import_info))
    info = model.import_info
    print(f"{args.file}: {e.name} ({info['style']} layout) -> {e.arch}, {e.num_classes} classes, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params")
    if info["dropped_keys_count"]:
        print(f"  dropped {info['dropped_keys_count']} keys (e.g. {', '.join(info['dropped_keys'][:3])})")
    print(f"  normalisation mean {_fmt(list(e.mean))} std {_fmt(list(e.std))}; input {e.input_size} px, "
          f"preprocessing {e.preprocessing}; trained for {e.threat} {e.eps}".rstrip())
    print(f"wrote {out} and {sidecar_path(out)}")
    return 0


def _catalogue(as_json: bool) -> int:
    import json

    from robustlens.models.catalogue import CATALOGUE, rows

    if as_json:
        print(json.dumps([e.to_dict() for e in CATALOGUE.values()], indent=2))
        return 0
    table = rows()
    cols = ["name", "arch", "layout", "input", "threat", "clean", "robust"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in table)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in table:
        print("  ".join(str("" if r[c] is None else r[c]).ljust(widths[c]) for c in cols))
    print("numbers: percent, as published (sources: robustlens models --catalogue --json)")
    return 0


def _import(args: argparse.Namespace) -> int:
    from robustlens.errors import UserError
    from robustlens.models.checkpoint import import_weights, save_checkpoint, sidecar_path

    if args.file is not None:
        return _import_published(args)
    if not args.arch:
        raise UserError("--import needs --arch (see `robustlens models` for the list)")
    out = _check_import_out(args)
    if args.num_classes is not None and args.num_classes < 1:
        raise UserError(f"--num-classes: expected a positive integer, got {args.num_classes}")
    model = import_weights(args.import_src, args.arch, num_classes=args.num_classes, mean=args.mean, std=args.std)
    meta = {"imported_from": str(args.import_src), "import": model.import_info}
    classes = _read_classes(args.classes)
    if classes is not None:
        meta["classes"] = classes
    save_checkpoint(out, model, meta)
    info = model.import_info
    norm = model.normalize.to_dict()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.import_src}: {info['style']} weights -> {model.arch}, {model.num_classes} classes, {n_params / 1e6:.2f} M params")
    if info["dropped_keys_count"]:
        print(f"  dropped {info['dropped_keys_count']} keys (e.g. {', '.join(info['dropped_keys'][:3])})")
    print(f"  normalisation mean {_fmt(norm['mean'])} std {_fmt(norm['std'])} ({info['normalize_from']})")
    print(f"wrote {out} and {sidecar_path(out)}")
    return 0


def _show(path: str) -> int:
    from robustlens.models.checkpoint import load_checkpoint

    model, sc = load_checkpoint(path)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{path}: {sc['arch']}, {sc['num_classes']} classes, {n_params / 1e6:.2f} M params, {sc.get('dtype', 'float32')}")
    print(f"  normalisation mean {_fmt(sc['normalize']['mean'])} std {_fmt(sc['normalize']['std'])}")
    if sc.get("model_kwargs"):
        print(f"  model options: {sc['model_kwargs']}")
    if sc.get("classes"):
        shown = ", ".join(sc["classes"][:10]) + (", ..." if len(sc["classes"]) > 10 else "")
        print(f"  classes: {shown}")
    for key in ("metrics", "training", "imported_from"):
        if sc.get(key):
            print(f"  {key}: {sc[key]}")
    print(f"  saved {sc.get('created', '?')} with robustlens {sc.get('versions', {}).get('robustlens', '?')}, torch {sc.get('versions', {}).get('torch', '?')}")
    return 0


def run(args: argparse.Namespace) -> int:
    from robustlens.models import available, create
    from robustlens.models.zoo import default_num_classes

    if args.catalogue:
        return _catalogue(args.json)
    if args.file is not None and args.import_src is None:
        from robustlens.errors import UserError

        raise UserError("--file: give the catalogue entry too (--import NAME --file PATH)")
    if args.import_src is not None:
        return _import(args)
    if args.show is not None:
        return _show(args.show)
    for name, info in available().items():
        extra = ""
        if args.params:
            import torch

            with torch.device("meta"):  # counts only: no memory, no initialisation
                n = sum(p.numel() for p in create(name, default_num_classes(name)).parameters())
            extra = f"  [{n / 1e6:.2f} M params]"
        print(f"{name:18s} {info}{extra}")
    return 0
