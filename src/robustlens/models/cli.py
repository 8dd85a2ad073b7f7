"""``robustlens models``: list the zoo, convert foreign weights, describe a checkpoint.

* ``robustlens models [--params]`` lists the architectures (optionally with parameter counts).
* ``robustlens models --import SRC --arch ARCH --out DST.safetensors [--num-classes N]
  [--mean a,b,c --std a,b,c] [--classes FILE|a,b,...]`` converts a torchvision / robustness /
  RobustBench weights file (read with ``torch.load(weights_only=True)`` only) into a robustlens
  checkpoint (safetensors + JSON sidecar).
* ``robustlens models --show CKPT.safetensors`` loads a checkpoint and prints its sidecar summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from robustlens.cli_common import add_overwrite_arg, check_out


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", action="store_true", help="also count parameters (builds each model)")
    p.add_argument("--import", dest="import_src", metavar="SRC", default=None, help="foreign weights file to convert (.pt/.pth/.bin/.safetensors)")
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


def _import(args: argparse.Namespace) -> int:
    from robustlens.errors import UserError
    from robustlens.models.checkpoint import import_weights, save_checkpoint, sidecar_path

    if not args.arch:
        raise UserError("--import needs --arch (see `robustlens models` for the list)")
    if not args.out:
        raise UserError("--import needs --out DST.safetensors")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out: expected a .safetensors path, got {out}")
    check_out(str(out), overwrite=args.overwrite, folder=False)
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
