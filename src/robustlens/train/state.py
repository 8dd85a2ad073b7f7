"""The files of a training run: model checkpoints, the resumable training state, metrics.

``state.safetensors`` holds everything a resume needs in one atomically written file: the
model, the optimiser buffers, the best weights so far and the torch RNG state as tensors, and
the step, the metric sums so far and the run's key (resolved config, model, data) as JSON
metadata (``state.json`` repeats the metadata for people). ``last.safetensors`` /
``best.safetensors`` are ordinary model checkpoints; ``metrics.jsonl`` has one line per epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from robustlens.data.base import ImageSet
from robustlens.errors import UserError
from robustlens.io import atomic_path, versions, write_json_atomic
from robustlens.train.config import TrainConfig
from robustlens.train.distributed import DistInfo

STATE_FORMAT = "robustlens-train-state/1"


def _cpu_tensors(prefix: str, sd: dict) -> dict[str, Tensor]:
    return {f"{prefix}{k}": v.detach().to("cpu").contiguous() for k, v in sd.items() if isinstance(v, Tensor)}


def save_model(path: Path, model: nn.Module, meta: dict) -> None:
    """A model checkpoint: ``save_checkpoint``'s format for a model of the zoo, else weights + a plain sidecar."""
    from robustlens.models import ImageClassifier, available
    from robustlens.models.checkpoint import save_checkpoint

    if isinstance(model, ImageClassifier) and model.arch in available():
        save_checkpoint(path, model, meta)
        return
    # Models outside the zoo (e.g. a late-fusion pair): weights + a plain sidecar.
    from safetensors.torch import save_file

    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(_cpu_tensors("", model.state_dict()), str(tmp))
    sidecar = {
        "arch": getattr(model, "arch", type(model).__name__),
        "num_classes": getattr(model, "num_classes", None),
        "normalize": model.normalize.to_dict() if hasattr(model, "normalize") else None,
        **meta,
        "versions": versions(),
    }
    write_json_atomic(path.with_suffix(".json"), sidecar)


def save_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, best_weights: dict | None, meta: dict) -> None:
    """Everything a resume needs, in one atomically written safetensors file."""
    from safetensors.torch import save_file

    tensors = _cpu_tensors("model.", model.state_dict())
    if best_weights is not None:
        tensors.update(_cpu_tensors("best.", best_weights))
    osd = opt.state_dict()
    for idx, st in osd["state"].items():
        tensors.update(_cpu_tensors(f"opt.{idx}.", {k: v for k, v in st.items() if isinstance(v, Tensor)}))
    tensors["rng.torch"] = torch.get_rng_state()
    meta = dict(meta, param_groups=osd["param_groups"],
                opt_scalars={str(i): {k: v for k, v in st.items() if not isinstance(v, Tensor)} for i, st in osd["state"].items()})
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)})
    write_json_atomic(path.with_suffix(".json"), {k: v for k, v in meta.items() if k not in ("param_groups", "opt_scalars")})


def load_state(path: Path) -> tuple[dict[str, Tensor], dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("state", "{}"))
        tensors = load_file(str(path))
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable robustlens training state ({e})") from None
    if meta.get("format") != STATE_FORMAT:
        raise UserError(f"{path}: not a robustlens training state (format {meta.get('format')!r}, expected {STATE_FORMAT!r})")
    return tensors, meta


def restore(tensors: dict[str, Tensor], meta: dict, model: nn.Module, opt: torch.optim.Optimizer) -> dict | None:
    """Load model and optimiser state; returns the best weights if the state holds them."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, scalars in meta.get("opt_scalars", {}).items():
        state.setdefault(int(idx), {}).update(scalars)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    # Keep each buffer in its parameter's memory format (channels_last), as in an unbroken run.
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                if isinstance(v, Tensor) and v.shape == p.shape:
                    opt.state[p][k] = torch.empty_like(p).copy_(v)
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    return best or None


def run_key(cfg: TrainConfig, model: nn.Module, train_part: ImageSet, info: DistInfo) -> dict:
    """What must match for a resume: the resolved config, the model and the data."""
    key = cfg.to_dict()
    key.pop("extra", None)
    key.update(
        arch=getattr(model, "arch", type(model).__name__),
        num_classes=int(getattr(model, "num_classes", 0) or 0),
        parameters=int(sum(p.numel() for p in model.parameters())),
        data=train_part.name,
        n_train=len(train_part),
        resolution=list(train_part.resolution),
        world_size=info.world,
    )
    return json.loads(json.dumps(key, default=str))


def tensorboard(out: Path | None, enabled: bool):
    if not enabled:
        return None
    if out is None:
        raise UserError("--tensorboard: needs an output folder (--out) to write the logs to")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard: the tensorboard package is not installed (pip install tensorboard)") from None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def write_metrics(path: Path, history: list[dict]) -> None:
    """metrics.jsonl, rewritten atomically from the history (consistent with the state after a kill)."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
