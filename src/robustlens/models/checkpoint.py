"""Safe checkpoints: safetensors weights + a JSON sidecar, and import of foreign weights.

A robustlens checkpoint is two files written atomically, the sidecar last::

    NAME.safetensors   the state dict (safetensors: no pickle, nothing executes on load)
    NAME.json          format version, arch, num_classes, classes, model kwargs,
                       normalisation mean/std, dtype, how it was trained (``meta``), versions

Both carry the same random ``id`` (the sidecar as a field, the weights in the safetensors
header), so a weights file and a sidecar from two different saves are never paired silently.
The model's input normalisation is not in the state dict (non-persistent buffers, see
:mod:`robustlens.models.base`); it lives in the sidecar.

:func:`import_weights` reads foreign files -- torchvision state dicts, MadryLab
``robustness`` checkpoints (``module.model.`` / ``module.attacker.model.`` /
``module.normalizer.`` prefixes), RobustBench-style state dicts (``module.`` prefix, possibly
under ``"state_dict"``) -- only through ``torch.load(weights_only=True)`` or safetensors. A
file that would need to execute pickled code is refused, never loaded with
``weights_only=False`` (the MadryLab lesson in DESIGN.md: pickled checkpoints break and run
code).
"""

from __future__ import annotations

import datetime as _dt
import json
import pickle
import re
import struct
import uuid
from pathlib import Path
from typing import Any, Sequence

import safetensors
import safetensors.torch
import torch
from torch import Tensor

from robustlens.errors import UserError
from robustlens.io import atomic_path, read_json, to_jsonable, versions, write_bytes_atomic
from robustlens.models.base import ImageClassifier
from robustlens.models.zoo import available, create

FORMAT = "robustlens-checkpoint"
FORMAT_VERSION = 1
# Sidecar fields that save_checkpoint computes itself; ``meta`` may not contradict them.
_RESERVED = ("format", "format_version", "id", "arch", "num_classes", "model_kwargs", "normalize", "dtype", "num_parameters", "weights_file")
_CONTAINER_KEYS = ("model", "state_dict", "model_state_dict", "net", "network", "model_state")
_MAX_LISTED = 5


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of a weights file: ``NAME.safetensors`` -> ``NAME.json``."""
    return Path(path).with_suffix(".json")


# --- saving --------------------------------------------------------------------------------


def _cpu_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """A contiguous CPU copy of the state dict (no shared storage: safetensors refuses aliasing)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def _check_classes(classes: Any, num_classes: int) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise UserError(f"classes: expected a list of {num_classes} class names, got {type(classes).__name__}")
    names = [str(c) for c in classes]
    if len(names) != num_classes:
        raise UserError(f"classes: {len(names)} class names given but the model has {num_classes} outputs")
    return names


def save_checkpoint(path: str | Path, model: ImageClassifier, meta: dict | None = None) -> Path:
    """Write ``model`` to ``path`` (safetensors) and its sidecar ``path.with_suffix('.json')``.

    ``meta`` holds anything that describes the model: ``classes`` (names, one per output),
    the training config, metrics, seed... It is stored in the sidecar next to the fields
    computed here (arch, num_classes, model kwargs, normalisation, dtype, versions). Both
    files are written atomically, weights first, sidecar last; the JSON is serialised before
    anything is written, so a bad ``meta`` leaves an earlier checkpoint untouched.
    Returns ``path``.
    """
    path = Path(path)
    if path.suffix == ".json":
        raise UserError(f"{path}: a checkpoint's weights file cannot end in .json (that name is its sidecar); use NAME.safetensors")
    if not isinstance(model, ImageClassifier):
        raise UserError(f"save_checkpoint: expected a robustlens ImageClassifier, got {type(model).__name__}")
    arch = model.arch
    if arch not in available():
        raise UserError(f"save_checkpoint: model architecture {arch!r} is not registered, so the checkpoint could not be rebuilt; build models with robustlens.models.create")
    config = dict(getattr(model, "config", None) or {})
    num_classes = int(model.num_classes)
    config.pop("num_classes", None)
    meta = dict(meta or {})
    classes = _check_classes(meta.pop("classes", getattr(model, "classes", None)), num_classes)

    tensors = _cpu_state_dict(model)
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in tensors.values() if t.is_floating_point()})
    ckpt_id = uuid.uuid4().hex
    sidecar: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "id": ckpt_id,
        "arch": arch,
        "num_classes": num_classes,
        "classes": classes,
        "model_kwargs": config,
        "normalize": model.normalize.to_dict(),
        "dtype": dtypes[0] if len(dtypes) == 1 else "float32",
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "weights_file": path.name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    for key, value in meta.items():
        if key in _RESERVED and to_jsonable(value) != to_jsonable(sidecar[key]):
            raise UserError(f"save_checkpoint: meta[{key!r}] = {value!r} contradicts the model ({sidecar[key]!r}); that field is filled in from the model")
        if key not in _RESERVED:
            sidecar[key] = value
    try:
        text = json.dumps(to_jsonable(sidecar), indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise UserError(f"save_checkpoint: meta is not JSON-serialisable ({e})") from None

    with atomic_path(path, suffix=".safetensors") as tmp:
        # looked up at call time (not imported by name) so tests can simulate a failing write
        safetensors.torch.save_file(tensors, str(tmp), metadata={"format": FORMAT, "id": ckpt_id, "arch": arch})
    write_bytes_atomic(sidecar_path(path), text.encode())
    return path


# --- loading -------------------------------------------------------------------------------


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError, OSError...
        raise UserError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return tensors, metadata


def _examples(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (", ..." if len(keys) > _MAX_LISTED else "")


def _diff_state_dict(model: torch.nn.Module, sd: dict[str, Tensor]) -> tuple[list[str], list[str], list[str]]:
    """Missing keys, unexpected keys and shape mismatches (``key: file (..) vs model (..)``)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items() if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    return missing, unexpected, shapes


def _fill_num_batches_tracked(model: torch.nn.Module, sd: dict[str, Tensor]) -> None:
    """Old torchvision weights (saved before PyTorch 0.4.1) have no ``num_batches_tracked``; add zeros."""
    for k in model.state_dict():
        if k.endswith(".num_batches_tracked") and k not in sd and k[: -len("num_batches_tracked")] + "running_mean" in sd:
            sd[k] = torch.zeros((), dtype=torch.long)


def _check_fits(model: ImageClassifier, sd: dict[str, Tensor], source: str, num_classes_hint: bool = True) -> None:
    """Raise a :class:`UserError` listing missing/unexpected keys and shape mismatches, if any."""
    missing, unexpected, shapes = _diff_state_dict(model, sd)
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_examples(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_examples(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches ({_examples(shapes)})")
    head_keys = {n for n, p in model.named_parameters() if p is model.head.weight or p is model.head.bias}
    if num_classes_hint and not missing and not unexpected and all(s.split(":")[0] in head_keys for s in shapes):
        hint = "only the classifier head differs: wrong number of classes?"
    else:
        hint = "is this a checkpoint for another architecture?"
    raise UserError(f"{source}: weights do not fit {model.arch} ({model.num_classes} classes): {'; '.join(parts)}; {hint}")


def _missing_sidecar_message(weights: Path, sidecar: Path) -> str:
    return (
        f"{weights}: no sidecar {sidecar.name} next to it. A robustlens checkpoint is NAME.safetensors + NAME.json "
        f"(arch, classes, normalisation), written by save_checkpoint / robustlens train. To use foreign weights "
        f"(torchvision, robustness, RobustBench) convert them first: robustlens models --import {weights} --arch ARCH "
        f"--out NEW.safetensors (or robustlens.models.checkpoint.import_weights)"
    )


def _build_from_sidecar(sidecar: Path, sc: dict, kwargs: dict, norm: dict) -> ImageClassifier:
    """``create(arch, num_classes, **model_kwargs)`` with the recorded normalisation; a sidecar
    whose fields do not build a model (``width = -5``, a mean of strings) is a one-line error."""
    num_classes = sc["num_classes"]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"{sidecar}: \"num_classes\" must be a positive integer, got {num_classes!r}")
    try:
        model = create(sc["arch"], num_classes, **kwargs)
        model.normalize.set(norm["mean"], norm["std"])
    except UserError as e:
        raise UserError(f"{sidecar}: {e}") from None
    except (TypeError, ValueError, RuntimeError) as e:  # a family's own constructor refusing the values
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{sidecar}: \"model_kwargs\" {json.dumps(kwargs)} do not build a {sc['arch']} ({first[:160]})") from None
    return model


def _check_same_save(weights: Path, sidecar: Path, header: dict, sc: dict) -> None:
    """The weights and the sidecar carry the same random id: two files from different saves
    (or a sidecar whose id was removed) are never paired."""
    wid, sid = header.get("id"), sc.get("id")
    if not wid or not sid:
        which = f"{sidecar.name} has no \"id\"" if not sid else f"{weights.name} carries no id in its header"
        raise UserError(f"{weights}: cannot tell whether the weights and {sidecar.name} come from one save ({which}); save the checkpoint again")
    if wid != sid:
        raise UserError(f"{weights}: the weights and {sidecar.name} come from different saves (an interrupted or mixed-up save); save the checkpoint again")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[ImageClassifier, dict]:
    """Rebuild a model saved by :func:`save_checkpoint`; returns ``(model, sidecar)``.

    ``path`` is the ``.safetensors`` file (or its ``.json`` sidecar). The model is rebuilt
    from the sidecar (``create(arch, num_classes, **model_kwargs)``), gets the recorded
    normalisation, loads the weights strictly, moves to ``device`` and is put in eval mode.
    ``model.classes`` holds the class names (or None). The returned dict is the whole
    sidecar: ``meta`` fields given at save time sit at its top level.

    ``NAME@PATH`` (a catalogue entry and a published weight file, see
    :mod:`robustlens.models.catalogue`) is imported from the published file instead.
    """
    if not Path(path).exists() and "@" in str(path):
        from robustlens.models.catalogue import load_ref

        return load_ref(str(path), device)
    path = Path(path)
    if path.suffix == ".json":
        sidecar = path
        if not sidecar.exists():
            raise UserError(f"{sidecar}: file not found")
        sc = read_json(sidecar)
        weights = sidecar.parent / (sc.get("weights_file") if isinstance(sc, dict) and sc.get("weights_file") else sidecar.with_suffix(".safetensors").name)
    else:
        weights, sidecar = path, sidecar_path(path)
        if not weights.exists():
            raise UserError(f"{weights}: checkpoint not found")
        if not sidecar.exists():
            raise UserError(_missing_sidecar_message(weights, sidecar))
        sc = read_json(sidecar)
    if not weights.exists():
        raise UserError(f"{weights}: weights file named by {sidecar.name} not found")
    if not isinstance(sc, dict) or sc.get("format") != FORMAT:
        raise UserError(f"{sidecar}: not a robustlens checkpoint sidecar (expected \"format\": \"{FORMAT}\")")
    if not isinstance(sc.get("format_version"), int) or sc["format_version"] > FORMAT_VERSION:
        raise UserError(f"{sidecar}: checkpoint format version {sc.get('format_version')!r} is newer than this robustlens reads ({FORMAT_VERSION}); upgrade robustlens")
    for key in ("arch", "num_classes"):
        if key not in sc:
            raise UserError(f"{sidecar}: sidecar has no {key!r} field")
    norm = sc.get("normalize")
    if not isinstance(norm, dict) or not isinstance(norm.get("mean"), list) or not isinstance(norm.get("std"), list):
        raise UserError(
            f"{sidecar}: no normalisation metadata (expected \"normalize\": {{\"mean\": [...], \"std\": [...]}}); "
            "robustlens models normalise their own input, so the statistics must be recorded"
        )
    kwargs = sc.get("model_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise UserError(f"{sidecar}: \"model_kwargs\" must be an object, got {type(kwargs).__name__}")
    model = _build_from_sidecar(sidecar, sc, kwargs, norm)
    classes = sc.get("classes")
    if classes is not None:
        try:
            classes = _check_classes(classes, model.num_classes)
        except UserError as e:
            raise UserError(f"{sidecar}: {e}") from None

    tensors, header = _read_safetensors(weights)
    _fill_num_batches_tracked(model, tensors)
    _check_fits(model, tensors, str(weights))
    _check_same_save(weights, sidecar, header, sc)
    model.load_state_dict(tensors, strict=True)
    dtype = getattr(torch, str(sc.get("dtype", "float32")), None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point and dtype != torch.float32:
        model.to(dtype)
    model.classes = classes
    return model.to(torch.device(device)).eval(), sc


# --- importing foreign weights -------------------------------------------------------------


def _is_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length and then ``{``."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 0 < n <= path.stat().st_size - 8


# Globals a plain state dict pickles (tensors, storages, OrderedDict); anything else is code.
_SAFE_GLOBAL_PREFIXES = ("torch.", "collections.OrderedDict", "_codecs.encode", "builtins.set", "numpy.core.multiarray._reconstruct", "numpy.dtype", "numpy.ndarray")


def _pickle_globals(path: Path, limit: int = 8) -> list[str]:
    """The ``module.name`` globals a pickle (or a torch zip's ``data.pkl``) references, read with
    :mod:`pickletools` (which parses opcodes and executes nothing); [] if it cannot be parsed."""
    import io
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                streams = [io.BytesIO(z.read(names[0]))] if names else []
        else:
            streams = [io.BytesIO(path.read_bytes())]
    except (OSError, zipfile.BadZipFile):
        return []
    found: list[str] = []
    for stream in streams:
        for _ in range(limit):  # a legacy torch file is several pickles in a row
            strings: list[str] = []
            try:
                for op, arg, _pos in pickletools.genops(stream):
                    if op.name == "GLOBAL":
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
            except Exception:  # noqa: BLE001 - a malformed pickle: report what was found so far
                break
            if stream.tell() >= len(stream.getbuffer()):
                break
    return found


def _torch_load_safely(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"GLOBAL ([\w.]+)", msg)
        if m or "global" in msg.lower():
            what = f" (it references {m.group(1)})" if m else ""
            raise UserError(
                f"{path}: refused: loading this file would execute pickled code{what}. robustlens only loads weights with "
                "torch.load(weights_only=True); if you trust the file, re-save just its state dict "
                "(torch.save(ckpt['state_dict'], 'clean.pt')) in a trusted session and import that"
            ) from None
        foreign = [g for g in _pickle_globals(path) if not g.startswith(_SAFE_GLOBAL_PREFIXES)]
        if foreign:
            raise UserError(
                f"{path}: refused: loading this file would execute pickled code (it references {', '.join(foreign[:3])}). "
                "robustlens only loads weights with torch.load(weights_only=True); if you trust the file, re-save just its "
                "state dict in a trusted session and import that"
            ) from None
        raise UserError(f"{path}: not a readable PyTorch weights file (the pickle is malformed)") from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, ImportError, IndexError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable PyTorch weights file ({first[:160]})") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _find_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    """The tensor dict inside a checkpoint: the object itself or under "model" / "state_dict" / ..."""
    for _ in range(3):
        if _is_state_dict(obj):
            return dict(obj)
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in _CONTAINER_KEYS if k in obj and isinstance(obj[k], dict)), None)
        if inner is None:
            # a state dict with a few non-tensor extras: keep the tensors if they dominate
            tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, Tensor)}
            if tensors and len(tensors) >= len(obj) - 2:
                return tensors
            break
        obj = inner
    keys = list(obj)[:8] if isinstance(obj, dict) else []
    raise UserError(
        f"{path}: no state dict found (expected a dict of tensors, or one under {', '.join(repr(k) for k in _CONTAINER_KEYS[:3])}); "
        f"found {type(obj).__name__}{' with keys ' + ', '.join(map(str, keys)) if keys else ''}"
    )


def _stats(t: Tensor) -> list[float]:
    return [float(v) for v in t.detach().float().flatten().tolist()]


def _normalise_keys(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Strip wrapper prefixes; pull normalisation buffers out. Returns (state dict, info)."""
    info: dict[str, Any] = {"style": "torchvision/plain", "dropped_keys": []}
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
        info["style"] = "robustbench/data-parallel (module. prefix)"
    file_stats: tuple[list[float], list[float]] | None = None
    if any(k.startswith(("model.", "attacker.", "normalizer.")) for k in sd) and any(k.startswith("model.") for k in sd):
        info["style"] = "robustness (MadryLab)"
        if "normalizer.new_mean" in sd and "normalizer.new_std" in sd:
            file_stats = (_stats(sd["normalizer.new_mean"]), _stats(sd["normalizer.new_std"]))
        elif "attacker.normalize.new_mean" in sd and "attacker.normalize.new_std" in sd:
            file_stats = (_stats(sd["attacker.normalize.new_mean"]), _stats(sd["attacker.normalize.new_std"]))
        info["dropped_keys"] = [k for k in sd if not k.startswith("model.")]
        sd = {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}
    for m_key, s_key in (("normalize.mean", "normalize.std"), ("mu", "sigma"), ("mean", "std")):
        if m_key in sd and s_key in sd and sd[m_key].numel() == sd[s_key].numel() <= 4:
            if file_stats is None:
                file_stats = (_stats(sd[m_key]), _stats(sd[s_key]))
            info["dropped_keys"] += [m_key, s_key]
            sd = {k: v for k, v in sd.items() if k not in (m_key, s_key)}
    info["file_normalize"] = file_stats
    return sd, info


def _parse_stats(value: Sequence[float] | str | None, name: str) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = [float(v) for v in value.replace(" ", "").split(",") if v]
        except ValueError:
            raise UserError(f"--{name}: expected comma-separated numbers such as 0.485,0.456,0.406, got {value!r}") from None
    out = [float(v) for v in value]
    if len(out) not in (1, 3):
        raise UserError(f"--{name}: expected 3 values (one per channel), got {len(out)}")
    return out * 3 if len(out) == 1 else out


def import_weights(
    path: str | Path,
    arch: str,
    num_classes: int | None = None,
    mean: Sequence[float] | str | None = None,
    std: Sequence[float] | str | None = None,
    device: str | torch.device = "cpu",
    model_kwargs: dict | None = None,
) -> ImageClassifier:
    """Build ``arch`` and load foreign weights from ``path`` (.pt/.pth/.bin/.ckpt/.safetensors).

    Understands plain/torchvision state dicts, MadryLab ``robustness`` checkpoints (the
    ``module.model.`` weights are kept, the ``module.attacker.model.`` copy dropped, and the
    normalisation taken from ``module.normalizer.new_mean/new_std``), and RobustBench /
    DataParallel state dicts (``module.`` prefix, possibly nested under ``"state_dict"``).
    Pickles are read with ``torch.load(weights_only=True)`` only; a file that needs to run
    code is refused with a :class:`UserError`.

    ``num_classes`` defaults to the size of the file's classifier head. Normalisation, in
    order of precedence: ``mean``/``std`` given here, statistics found in the file, the
    architecture's default (ImageNet for ImageNet stems, CIFAR-10 otherwise; RobustBench
    models expect raw input, so pass ``mean=(0, 0, 0), std=(1, 1, 1)`` for them).
    ``model.import_info`` records the detected style, the normalisation source and the
    dropped keys. The model is returned in eval mode.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: weights file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; expected a .pt/.pth/.bin/.safetensors weights file")
    if _is_safetensors(path):
        raw: Any = _read_safetensors(path)[0]
    else:
        raw = _torch_load_safely(path)
    sd, info = _normalise_keys(_find_state_dict(raw, path))

    kw = dict(model_kwargs or {})
    mean_l, std_l = _parse_stats(mean, "mean"), _parse_stats(std, "std")
    if (mean_l is None) != (std_l is None):
        raise UserError("--mean/--std: give both or neither")
    if mean_l is not None:
        kw["mean"], kw["std"] = mean_l, std_l
        info["normalize_from"] = "argument"
    elif info["file_normalize"] is not None:
        kw["mean"], kw["std"] = info["file_normalize"]
        info["normalize_from"] = "file"
    else:
        info["normalize_from"] = "architecture default"

    # Cheap probe on the meta device: find the head's key (num_classes) and check keys/shapes
    # before allocating the real model.
    with torch.device("meta"):
        probe = create(arch, 1 if num_classes is None else num_classes, **kw)
    head_key = next(n for n, p in probe.named_parameters() if p is probe.head.weight)
    if "sub_block1.layer.0.bn1.weight" in sd and not any(k.startswith("sub_block1.") for k in probe.state_dict()):
        dropped = [k for k in sd if k.startswith("sub_block1.")]  # TRADES WRN-34-10: defined but never used in forward
        info["dropped_keys"] += dropped
        sd = {k: v for k, v in sd.items() if not k.startswith("sub_block1.")}
    if num_classes is None and head_key in sd and sd[head_key].dim() == 2:
        num_classes = int(sd[head_key].shape[0])
        with torch.device("meta"):
            probe = create(arch, num_classes, **kw)
    _fill_num_batches_tracked(probe, sd)
    _check_fits(probe, sd, f"{path} ({info['style']})")

    model = create(arch, num_classes or 1, **kw)
    model.load_state_dict(sd, strict=True)
    info["source"] = str(path)
    info["dropped_keys_count"] = len(info["dropped_keys"])
    info["dropped_keys"] = info["dropped_keys"][:20]
    info.pop("file_normalize")
    model.import_info = info
    return model.to(torch.device(device)).eval()
