"""What every stage shares: the spec, the device, seeds, the data memo and model loading.

One run of the study hands every stage the same ``ctx.shared`` dict (the runner's memo):
``spec``, the resolved ``device``, the data splits (read once), the transfer targets (read once
per size) and the models (loaded once from their train stages, frozen, in eval mode).

Seeds: every random draw is seeded from ``spec.seed`` plus a fixed per-stage offset
(:data:`SEED_OFFSETS`), so a rerun (or a killed and resumed run) gives the same numbers on the
same machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustlens.errors import UserError
from robustlens.io import file_sha256  # noqa: F401  (a loaded checkpoint's identity, part of its train stage's hash)
from robustlens.study.runner import StageContext
from robustlens.study.spec import Spec

# Fixed per-stage offsets added to spec.seed (documented, never changed).
SEED_OFFSETS = {
    "data": 0, "robustness": 11, "transforms": 12, "bias": 13, "neurons": 14, "saliency": 15,
    "featvis": 16, "sanity": 17, "localisation": 18, "generation": 19, "transfer": 20, "construct": 21, "regime": 22, "faithfulness": 23,
}


def spec_of(ctx: StageContext) -> Spec:
    return ctx.shared["spec"]


def spec_device(spec: Spec):
    """The spec's device: ``auto`` / ``""`` = cuda when available, else cpu."""
    import torch

    if spec.device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from robustlens.cli_common import resolve_device

    return resolve_device(spec.device)


def device(ctx: StageContext):
    """The run's device (resolved once)."""
    if "device" not in ctx.shared:
        ctx.shared["device"] = spec_device(spec_of(ctx))
    return ctx.shared["device"]


def stage_seed(ctx: StageContext, stage: str) -> int:
    """The seed of ``stage``'s random draws: ``spec.seed * 1000 + SEED_OFFSETS[stage]``."""
    return int(spec_of(ctx).seed) * 1000 + SEED_OFFSETS[stage]


def load_data(shared: dict) -> dict:
    """The data splits of the spec ({"train", "test"[, "conflict"]}), loaded once per run."""
    if "data" in shared:
        return shared["data"]
    spec: Spec = shared["spec"]
    d = spec.data
    shared["data"] = _read_splits(spec, d.size or None, {}, d.n_train, d.n_test, conflict=True)
    return shared["data"]


def load_target_splits(shared: dict, size: int, n_train: int = 0, n_test: int = 0, extra_options: dict | None = None) -> dict:
    """The study's data set at side ``size`` ({"train", "test"}), for the transfer stage.

    The same source and options as ``[data]`` (plus ``extra_options``): the procedural set is
    rendered at ``size``, an on-disk set is resized by its reader. ``n_train`` / ``n_test``
    (0 = ``data.n_train`` / ``data.n_test``) limit the splits exactly as :func:`load_data` does.
    Memoised per run."""
    spec: Spec = shared["spec"]
    d = spec.data
    extra = dict(extra_options or {})
    n_train, n_test = n_train or d.n_train, n_test or d.n_test
    key = (int(size), n_train, n_test, tuple(sorted((k, repr(v)) for k, v in extra.items())))
    memo = shared.setdefault("targets", {})
    if key not in memo:
        if size == d.size and not extra and (n_train, n_test) == (d.n_train, d.n_test):
            data = load_data(shared)
            memo[key] = {"train": data["train"], "test": data["test"]}
        else:
            memo[key] = _read_splits(spec, int(size), extra, n_train, n_test, conflict=False)
    return memo[key]


def _read_splits(spec: Spec, size: int | None, extra: dict, n_train: int, n_test: int, conflict: bool) -> dict:
    """Read the spec's data source at ``size``: train, test (or a seeded 20% of a lone split)
    and, when ``conflict`` and present, the cue-conflict split; ``n_train`` / ``n_test`` cut
    the splits to that many images by a seeded permutation."""
    import torch

    from robustlens.data import load_splits
    from robustlens.data.source import is_procedural

    d = spec.data
    opts = {**d.options, **extra}
    if d.preprocessing != "squash":  # data.preprocessing (res256crop224: the ImageNet evaluation)
        opts.setdefault("preprocessing", d.preprocessing)
    if is_procedural(d.source):
        if n_train and "n_train" not in opts:
            opts["n_train"] = n_train
        if n_test and "n_test" not in opts:
            opts["n_test"] = n_test
        if not conflict:
            opts["splits"] = ["train", "test"]
    splits = load_splits(d.source, size=size, format=d.format or None, **opts)
    if "train" not in splits and len(splits) == 1:
        splits = _hold_out(spec, next(iter(splits.values())), n_test)
    if "train" not in splits:
        raise UserError(f"data.source {d.source!r}: no 'train' split (found {', '.join(splits)})")
    test_name = next((s for s in ("test", "val", "valid", "validation") if s in splits), None)
    if test_name is None:
        # One split only: hold out a seeded 20% as the test split.
        full = splits["train"]
        g = torch.Generator().manual_seed(spec.seed)
        perm = torch.randperm(len(full), generator=g)
        k = max(1, len(full) // 5)
        splits = {"train": full.subset(perm[k:].sort().values), "test": full.subset(perm[:k].sort().values)}
        test_name = "test"
    out = {"train": splits["train"], "test": splits[test_name]}
    if conflict and "conflict" in splits:
        out["conflict"] = splits["conflict"]
    for key, n in (("train", n_train), ("test", n_test)):
        if n and len(out[key]) > n:
            g = torch.Generator().manual_seed(spec.seed + (1 if key == "test" else 0))
            idx = torch.randperm(len(out[key]), generator=g)[:n].sort().values
            out[key] = out[key].subset(idx)
    return out


def _hold_out(spec: Spec, full, n_test: int) -> dict:
    """An evaluation-only source (one split that is not ``train``, such as an ImageNet ``val/``
    folder): a seeded ``n_test`` of its images (20% when ``n_test`` is 0) are the test split,
    the rest the train split (the sample grid, the style pool, and what a model trained by the
    study learns from: never the test images)."""
    import torch

    g = torch.Generator().manual_seed(spec.seed)
    perm = torch.randperm(len(full), generator=g)
    k = n_test if 0 < n_test < len(full) else max(1, len(full) // 5)
    return {"train": full.subset(perm[k:].sort().values), "test": full.subset(perm[:k].sort().values)}


def eval_subset(shared: dict, n: int, split: str = "test"):
    """``n`` images of a split drawn by a permutation seeded with the spec's seed (the same
    images for every stage; splits read from folders are sorted by class, so never the first n)."""
    data = load_data(shared)[split]
    return data.sample(n, seed=int(shared["spec"].seed))


def load_model(ctx: StageContext, name: str):
    """Model ``name`` of the spec, from its train stage's folder (loaded once per run), in eval mode
    and in its fastest layout on the run's device (:func:`robustlens.layout.fast_layout`)."""
    memo = ctx.shared.setdefault("models", {})
    if name in memo:
        return memo[name]
    from robustlens.layout import fast_layout
    from robustlens.models.checkpoint import load_checkpoint

    out = ctx.deps[f"train_{name}"]
    path = out.path(out.result["checkpoint"]) if out.result.get("source") == "trained" else Path(out.result["checkpoint"])
    model, _meta = load_checkpoint(path, device=device(ctx))
    fast_layout(model, device(ctx))  # the study owns it: its fastest measured layout (robustlens.layout)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    memo[name] = model
    return model


def analysis_models(spec: Spec) -> list[str]:
    """Models compared in the analysis stages: every model except the dedicated generation
    judges and the second backbones named by ``stages.transfer.second_std`` / ``second_adv``."""
    g = spec.stages.generation
    helpers = {g.judge, g.judge_adv, spec.stages.transfer.second_std, spec.stages.transfer.second_adv} - {""}
    return [m for m in spec.models if m not in helpers or m in ("std", "adv")]


def analysed(ctx: StageContext) -> dict[str, Any]:
    """The analysis models of the run, loaded: ``{name: model}``."""
    return {n: load_model(ctx, n) for n in analysis_models(spec_of(ctx))}


def accuracy(model, x, y, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``, in batches of ``batch_size``."""
    import torch

    hits = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            hits += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return hits / max(1, len(x))


def is_time_key(k: str) -> bool:
    """A wall-clock field (results.json holds none: reruns must write identical files)."""
    k = k.lower()
    return any(t in k for t in ("second", "time", "images_per_s", "img_s", "per_sec", "throughput", "wall"))


def strip_seconds(obj: Any) -> Any:
    """``obj`` without its wall-clock fields (:func:`is_time_key`), recursively."""
    if isinstance(obj, dict):
        return {k: strip_seconds(v) for k, v in obj.items() if not is_time_key(k)}
    if isinstance(obj, list):
        return [strip_seconds(v) for v in obj]
    return obj


def analysis_deps(spec: Spec) -> tuple[str, ...]:
    """What an analysis stage consumes: the data and every analysed model's train stage."""
    return ("data", *(f"train_{n}" for n in analysis_models(spec)))


def threat_params(spec: Spec) -> dict:
    """The study's threat as stage parameters: ``{"norm", "eps"}`` (eps parsed)."""
    from robustlens.study.spec import parse_eps

    return {"norm": spec.threat.norm, "eps": parse_eps(spec.threat.eps, name="threat.eps")}
