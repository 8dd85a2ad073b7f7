"""robustlens.study: one command that runs the whole STD vs ADV comparison.

    from robustlens.study import load_spec, run_study
    summary = run_study(load_spec("examples/trifeature.toml"))   # or load_spec(None): the default
    summary["report"]   # runs/<name>/report.html

Pieces: :mod:`.spec` (TOML spec, defaults, validation), :mod:`.runner` (cached, resumable
stage DAG), :mod:`.stages` (one module per stage and the DAG), :mod:`.result` (``StageResult``,
what a stage returns), :mod:`.claims` (the seeds' claims, checked), :mod:`.report`
(self-contained HTML). The results.json schema: ``docs/results-schema.md``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TextIO

from robustlens.study.spec import Spec, default_spec, load_spec, parse_spec

SCHEMA = "robustlens.study/1"

__all__ = ["SCHEMA", "Spec", "default_spec", "load_spec", "parse_spec", "run_study", "assemble_results"]


def _versions() -> dict[str, str]:
    """Package versions without importing torch (so a fully cached rerun stays fast)."""
    import robustlens

    out = {"robustlens": robustlens.__version__, "python": platform.python_version()}
    for pkg in ("torch", "numpy", "matplotlib", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def assemble_results(spec: Spec, runner, outputs: dict) -> dict:
    """results.json content: config, versions, stage hashes, every stage's numbers, claims.

    Deliberately free of wall-clock values (they go to timings.json), so an uninterrupted run,
    a cached rerun and a killed-then-resumed run write byte-identical files.
    """
    from robustlens.study.claims import evaluate_claims, validity_gate

    results = {name: out.result for name, out in outputs.items()}
    config = spec.to_dict()
    config.pop("out_dir", None)  # where the results are written is not part of what they are
    return {
        "schema": SCHEMA,
        "name": spec.name,
        "config": config,
        "versions": _versions(),
        "stages": {
            name: {"hash": out.hash, "status": "measured" if out.measured else "not_measured"}
            for name, out in outputs.items()
        },
        "results": results,
        "validity": validity_gate(results),
        "claims": evaluate_claims(results),
    }


def _check_checkpoints_against(spec: Spec, data_out) -> None:
    """Fail before any training if a checkpoint's classes do not match the data."""
    from robustlens.errors import UserError
    from robustlens.study.spec import checkpoint_entry
    from robustlens.study.stages import check_checkpoint_classes
    from robustlens.study.stages.train import check_published

    classes = data_out.result.get("classes") or []
    for name, m in spec.models.items():
        if not m.checkpoint:
            continue
        if checkpoint_entry(m.checkpoint):  # NAME@PATH: the catalogue entry says what it expects
            check_published(spec, name, list(classes), spec.source_path or "spec")
            continue
        side = Path(m.checkpoint).with_suffix(".json")
        if not side.exists():
            raise UserError(f"models.{name}.checkpoint: {m.checkpoint} has no JSON sidecar ({side.name}) naming its classes")
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"models.{name}.checkpoint: sidecar {side} is not valid JSON ({e.msg})") from None
        check_checkpoint_classes(m.checkpoint, meta, list(classes), f"{spec.source_path or 'spec'}: models.{name}.checkpoint")


def _check_data(spec: Spec, numbers: dict) -> None:
    """Right after the data stage, before any training: the checks that need the data (both
    splits hold images, two classes at least, the ensemble's attacks and the featvis layers
    fit the models), each naming its spec key."""
    from robustlens.errors import UserError
    from robustlens.study.stages.featvis import check_layers
    from robustlens.study.stages.robustness import check_classes

    where = spec.source_path or "spec"
    for split, key in (("train", "n_train"), ("test", "n_test")):
        if not numbers["splits"].get(split, {}).get("images"):
            raise UserError(f"{where}: data: the {split} split holds no images (data.source {spec.data.source!r}, "
                            f"data.{key} = {getattr(spec.data, key)}, data.options = {spec.data.options}); "
                            f"expected at least one")
    classes = numbers.get("classes") or []
    if len(classes) < 2:
        raise UserError(f"{where}: data.source {spec.data.source!r}: {len(classes)} class ({', '.join(classes)}); "
                        "a classifier needs at least 2")
    check_classes(spec, len(classes))
    check_layers(spec, len(classes), int(numbers.get("channels") or 3))


def _torchrun_world() -> int:
    from robustlens.train.distributed import env_world

    return env_world()[1]


def _train_under_torchrun(spec: Spec, runner, after, stream: TextIO) -> dict | None:
    """``torchrun --nproc_per_node N -m robustlens.cli study ...``: every rank trains the
    study's models together (DistributedDataParallel, :mod:`robustlens.train.distributed`),
    then ranks other than 0 exit and rank 0 runs every other stage alone.

    Rank 0 runs the data stage first (so the other ranks read the decoded cache instead of
    decoding the same files again), then every rank runs the train stages (loaded
    checkpoints excepted) in the same order. Rank 0 writes the stage folders exactly as a
    single-process run does; the results layout is the same. Returns rank 0's outputs of the
    distributed phase, or ``None`` on the other ranks."""
    from datetime import timedelta

    from robustlens.study.stages import spec_device, stage_train
    from robustlens.train import distributed as tdist

    info = tdist.setup(spec_device(spec), timeout=timedelta(hours=6))
    if not info.enabled:
        return {}
    trained = [s.name for s in runner.stages if s.fn is stage_train and not s.params["spec"]["checkpoint"]]
    outputs: dict = {}
    try:
        if info.is_main:
            print(f"torchrun: {info.world} processes train {', '.join(trained) or 'nothing'}; rank 0 then runs the rest",
                  file=stream, flush=True)
            outputs = runner.run(after=after, only={"data"})
        tdist.barrier(info)
        if info.is_main:
            outputs = runner.run(after=after, only=set(trained) | {"data"}, known=outputs)
        else:
            runner.shared["dist_worker"] = True
            runner.run_worker(trained)
        tdist.barrier(info)
    finally:
        tdist.cleanup(info)
        tdist.detach()
    return outputs if info.is_main else None


def _copy_checkpoints(outputs: dict, ck_dir: Path) -> None:
    """``runs/<name>/checkpoints/<model>.safetensors`` + ``.json``: copies of every trained
    model (the second transfer backbones too), next to the report.

    A copy is replaced whenever its bytes differ from the stage's file (SHA-256, not size or
    mtime: another spec's model of the same size stays no more), atomically; the copied
    sidecar names its own weights file (``weights_file = "<model>.safetensors"``), so
    ``robustlens models --show checkpoints/<model>.json`` loads it."""
    from robustlens.io import copy_file_atomic, file_sha256, write_json_atomic

    for key, out in outputs.items():
        if not key.startswith("train_") or not out.measured or out.result.get("source") != "trained":
            continue
        name = key[len("train_"):]
        src, dst = out.path("model.safetensors"), ck_dir / f"{name}.safetensors"
        if not dst.exists() or file_sha256(dst) != file_sha256(src):
            copy_file_atomic(src, dst)
        sidecar = {**json.loads(out.path("model.json").read_text()), "weights_file": dst.name}
        side_dst = dst.with_suffix(".json")
        if not side_dst.exists() or json.loads(side_dst.read_text()) != sidecar:
            write_json_atomic(side_dst, sidecar)


def _is_worker_rank() -> bool:
    """A torchrun rank other than 0 (rank 0 alone holds the run folder's lock)."""
    import os

    return int(os.environ.get("RANK", "0") or 0) > 0 and _torchrun_world() > 1


def run_study(spec: Spec, stream: TextIO | None = None, *, only: list[str] | None = None) -> dict:
    """Run (or resume, or reuse) every stage of ``spec``; write results.json, timings.json,
    report.html and the checkpoints under ``runs/<name>/``. Returns a summary dict.

    ``only`` limits the run to those stages and the stages they depend on (``robustlens
    sweep`` runs just the regime map); each stage keeps its hash, so a later full run reuses
    them. An unknown or disabled stage name is one line.

    The run folder is locked for the whole run (:func:`robustlens.io.folder_lock`): a second
    run on the same folder stops at once with "already running (pid N)"."""
    from contextlib import nullcontext

    from robustlens.io import folder_lock
    from robustlens.study.runner import check_run_dir

    from robustlens.study.stages import build_stages

    check_run_dir(spec.run_dir)
    _check_only(only, build_stages(spec))
    with nullcontext() if _is_worker_rank() else folder_lock(spec.run_dir):
        return _run_study(spec, stream if stream is not None else sys.stdout, only)


def _check_only(only: list[str] | None, stages: list) -> None:
    """``only`` names stages of this study's DAG (enabled ones)."""
    from robustlens.registry import unknown_name

    names = [s.name for s in stages]
    for n in only or ():
        if n not in names:
            raise unknown_name("stage (or one disabled in this spec)", n, names, key="--only")


def _run_study(spec: Spec, stream: TextIO, only: list[str] | None = None) -> dict:
    from robustlens.io import write_bytes_atomic, write_json_atomic
    from robustlens.study.report import render_report
    from robustlens.study.runner import Runner
    from robustlens.study.stages import build_stages, spec_device
    from robustlens.study.stages.train import check_batch_sizes

    t0 = time.perf_counter()
    run_dir = spec.run_dir
    stages = build_stages(spec)
    runner = Runner(stages, run_dir, shared={"spec": spec}, stream=stream)
    print(f"robustlens study {spec.name}: {len(stages)} stages -> {run_dir}/", file=stream, flush=True)

    def after(out) -> None:
        if out.name == "data" and out.measured:
            _check_data(spec, out.result)
            check_batch_sizes(runner.stages, runner.shared, spec_device(spec))
            _check_checkpoints_against(spec, out)

    known = None
    if _torchrun_world() > 1:
        known = _train_under_torchrun(spec, runner, after, stream)
        if known is None:  # a rank other than 0: its share of the training is done
            return {"report": None, "results": None, "timings": None, "outputs": {}, "results_data": None}
    outputs = runner.run(after=after, known=known, only=set(only) if only else None)
    results = assemble_results(spec, runner, outputs)
    write_json_atomic(run_dir / "results.json", results)
    _copy_checkpoints(outputs, run_dir / "checkpoints")
    html = render_report(results, outputs)
    write_bytes_atomic(run_dir / "report.html", html.encode())
    total = time.perf_counter() - t0
    timings = {
        "total_seconds": round(total, 3),
        "stages": {n: {"status": o.status, "seconds": round(o.seconds, 3)} for n, o in outputs.items()},
    }
    write_json_atomic(run_dir / "timings.json", timings)
    verdicts = [c["verdict"] for c in results["claims"]]
    measured = sum(o.measured for o in outputs.values())
    cached = sum(o.status == "cached" for o in outputs.values())
    print(
        f"done in {total:.1f} s: {measured}/{len(outputs)} stages measured ({cached} cached); claims: "
        f"{verdicts.count('holds')} hold, {verdicts.count('does not hold')} do not hold, "
        f"{verdicts.count('inconclusive')} inconclusive, {verdicts.count('not measured')} not measured",
        file=stream,
        flush=True,
    )
    for w in results["validity"].get("warnings", []):
        print(f"WARNING: {w}", file=stream, flush=True)
    print(f"report:  {run_dir / 'report.html'}", file=stream)
    print(f"results: {run_dir / 'results.json'}", file=stream, flush=True)
    return {"report": run_dir / "report.html", "results": run_dir / "results.json", "timings": timings,
            "outputs": outputs, "results_data": results}
