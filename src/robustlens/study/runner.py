"""Cached, resumable stages: the engine under ``robustlens study``.

A study is a DAG of stages. Each stage's output lives in
``runs/<name>/stages/<stage>-<hash>/``, where ``hash`` is the SHA-256 (first 12 hex digits)
of everything the stage depends on: its name, its own parameters, the hashes of the stages
it consumes and the robustlens version. So:

* a rerun finds every ``<stage>-<hash>/done.json`` and recomputes nothing;
* a changed parameter changes that stage's hash and, through the DAG, the hashes of the
  stages downstream of it, and nothing else;
* a stage is written into a temporary folder (``stages/.tmp-<stage>-<hash>``), ``done.json``
  last, then renamed into place: a folder with a final name is always complete. A killed
  run leaves only the temporary folder, which the next run discards; long stages (training)
  also get a persistent ``work/<stage>-<hash>/`` folder in which they checkpoint and from
  which they resume;
* :func:`robustlens.study.run_study` holds an advisory lock on the run folder
  (:func:`robustlens.io.folder_lock`) for the whole run, so only the holder of the lock ever
  discards a temporary folder: a second run on the same folder stops with
  "already running (pid N)" instead of deleting the first one's work.

A stage returns a :class:`~robustlens.study.result.StageResult` (or a plain JSON-able dict),
written to its folder as ``result.json``. A stage that cannot run on this data (no masks, no
cue-conflict split, no judge model) raises :class:`NotMeasured`; its outcome is reported as
"not measured", never cached, and every stage that consumes it is "not measured" too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from robustlens.errors import UserError
from robustlens.progress import stage as stage_scope
from robustlens.study.result import StageResult


class NotMeasured(Exception):
    """Raised by a stage that cannot run here (say why: a missing package, no masks, ...)."""


@dataclass
class StageDef:
    """One node of the DAG: ``fn(ctx) -> StageResult`` (or a JSON-able dict) computed from
    ``params`` and ``deps``."""

    name: str
    fn: Callable[["StageContext"], "StageResult | dict"]
    params: dict = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    title: str = ""


@dataclass
class StageOutput:
    """What a finished (or skipped) stage left: its folder and its ``result.json`` content."""

    name: str
    hash: str
    dir: Path | None
    result: dict
    status: str  # "done" | "cached" | "not_measured"
    seconds: float = 0.0

    @property
    def measured(self) -> bool:
        return self.status in ("done", "cached")

    @property
    def reason(self) -> str:
        """Why the stage was not measured ("" when it was)."""
        return "" if self.measured else str(self.result.get("reason", ""))

    def stage_result(self) -> StageResult:
        """The typed form of ``result``: numbers, notes, summary, tables, figures, captions."""
        return StageResult.from_dict(self.result)

    def path(self, relative: str) -> Path:
        if self.dir is None:
            raise FileNotFoundError(f"stage {self.name} was not measured")
        return self.dir / relative


@dataclass
class StageContext:
    """Handed to a stage function: where to write, what it consumes, shared resources."""

    name: str
    params: dict
    out: Path  # temporary folder; becomes the stage folder on success
    work: Path  # persistent folder for resumable work (checkpoints mid-stage)
    deps: dict[str, StageOutput]
    shared: dict  # memo shared by all stages of one run (data, models, device)
    log: Callable[[str], None]


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stage_hash(name: str, params: dict, dep_hashes: dict[str, str], version: str) -> str:
    """SHA-256 of (name, params, dependency hashes, package version), first 12 hex digits."""
    payload = canonical_json({"stage": name, "params": params, "deps": dep_hashes, "version": version})
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def topological(stages: list[StageDef]) -> list[StageDef]:
    """Stages ordered so that every stage comes after its dependencies (stable otherwise)."""
    by_name = {s.name: s for s in stages}
    if len(by_name) != len(stages):
        raise ValueError("duplicate stage names")
    order: list[StageDef] = []
    state: dict[str, int] = {}

    def visit(s: StageDef, chain: tuple[str, ...]) -> None:
        if state.get(s.name) == 2:
            return
        if state.get(s.name) == 1:
            raise ValueError(f"cycle in stages: {' -> '.join((*chain, s.name))}")
        state[s.name] = 1
        for d in s.deps:
            if d not in by_name:
                raise ValueError(f"stage {s.name} depends on unknown stage {d}")
            visit(by_name[d], (*chain, s.name))
        state[s.name] = 2
        order.append(s)

    for s in stages:
        visit(s, ())
    return order


def plan_hashes(stages: list[StageDef], version: str) -> dict[str, str]:
    """The hash of every stage (computed in dependency order)."""
    hashes: dict[str, str] = {}
    for s in topological(stages):
        hashes[s.name] = stage_hash(s.name, s.params, {d: hashes[d] for d in s.deps}, version)
    return hashes


def _read_result(folder: Path) -> dict:
    return json.loads((folder / "result.json").read_text())


class Runner:
    """Runs a list of :class:`StageDef` under ``run_dir`` with caching and resume."""

    def __init__(
        self,
        stages: list[StageDef],
        run_dir: str | Path,
        version: str | None = None,
        shared: dict | None = None,
        stream: TextIO | None = None,
    ) -> None:
        if version is None:
            from robustlens import __version__ as version
        self.stages = topological(stages)
        self.run_dir = Path(run_dir)
        self.version = version
        self.hashes = plan_hashes(self.stages, version)
        self.shared = shared if shared is not None else {}
        self.stream = stream if stream is not None else sys.stdout

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / "stages" / f"{name}-{self.hashes[name]}"

    def work_dir(self, name: str) -> Path:
        return self.run_dir / "work" / f"{name}-{self.hashes[name]}"

    def is_done(self, name: str) -> bool:
        return (self.stage_dir(name) / "done.json").exists()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def closure(self, names: set[str] | list[str]) -> set[str]:
        """``names`` and every stage they depend on, directly or not."""
        by_name = {s.name: s for s in self.stages}
        todo, seen = list(names), set()
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            if n not in by_name:
                raise ValueError(f"unknown stage {n}")
            seen.add(n)
            todo.extend(by_name[n].deps)
        return seen

    def run(
        self,
        after: Callable[[StageOutput], None] | None = None,
        only: set[str] | list[str] | None = None,
        known: dict[str, StageOutput] | None = None,
    ) -> dict[str, StageOutput]:
        """Run every stage (or reuse its cached output); returns the outputs by name.

        ``after(output)`` is called after each stage (e.g. to check a loaded checkpoint's
        classes against the data before any training starts). ``only`` limits the run to
        those stages and their dependencies; ``known`` hands in outputs of an earlier call in
        this process (reused as they are, so their status and seconds stay "done")."""
        outputs: dict[str, StageOutput] = {}
        if known is None:
            self.discard_stale()
        keep = self.closure(only) if only is not None else None
        stages = [s for s in self.stages if keep is None or s.name in keep]
        total = len(stages)
        width = max(len(s.name) for s in stages) if stages else 0
        t_run = time.perf_counter()
        for i, s in enumerate(stages, 1):
            h = self.hashes[s.name]
            head = f"[{i:>2}/{total}] {s.name:<{width}}"
            final = self.stage_dir(s.name)
            prior = (known or {}).get(s.name)
            if prior is not None and prior.hash == h and prior.status == "done":
                outputs[s.name] = prior
                self._print(f"{head}  done before ({prior.seconds:.1f} s)")
                continue
            if (final / "done.json").exists():
                outputs[s.name] = StageOutput(s.name, h, final, _read_result(final), "cached")
                self._print(f"{head}  cached      ({final.name})")
                if after is not None:
                    after(outputs[s.name])
                continue
            missing = [d for d in s.deps if not outputs[d].measured]
            if missing:
                reason = f"needs {', '.join(missing)}, which {'was' if len(missing) == 1 else 'were'} not measured"
                outputs[s.name] = StageOutput(s.name, h, None, {"status": "not_measured", "reason": reason}, "not_measured")
                self._print(f"{head}  not measured: {reason}")
                continue
            self._print(f"{head}  running ...")
            t0 = time.perf_counter()
            out = self._execute(s, h, final, outputs)
            out.seconds = time.perf_counter() - t0
            outputs[s.name] = out
            self.write_timings(outputs, time.perf_counter() - t_run)
            if out.measured:
                self._print(f"{head}  done in {out.seconds:.1f} s")
            else:
                self._print(f"{head}  not measured: {out.result.get('reason', '')}")
            if after is not None:
                after(out)
        return outputs

    def write_timings(self, outputs: dict[str, StageOutput], total: float) -> None:
        """``timings.json`` in the run folder: every stage's status and wall seconds so far (a
        killed or running study shows where the time went; results.json holds no wall time)."""
        from robustlens.io import write_json_atomic

        write_json_atomic(self.run_dir / "timings.json", {
            "total_seconds": round(total, 3),
            "stages": {n: {"status": o.status, "seconds": round(o.seconds, 3)} for n, o in outputs.items()},
        })

    def discard_stale(self) -> None:
        """Remove the temporary stage folders a killed run left (call it holding the run lock)."""
        root = self.run_dir / "stages"
        if root.is_dir():
            for tmp in root.glob(".tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)

    def run_worker(self, names: list[str]) -> None:
        """Another torchrun rank's share of ``names``: the stages rank 0 is running too (each
        joins the same collectives), with a private scratch folder for ``out`` (rank 0 alone
        writes the stage folder) and the shared ``work`` folder (resume state, written by
        rank 0, read by every rank). Stages rank 0 finds cached are skipped here too: no
        stage can complete without every rank, so both ranks see the same ``done.json``."""
        import tempfile

        for s in self.stages:
            if s.name not in names or self.is_done(s.name):
                continue
            scratch = Path(tempfile.mkdtemp(prefix=f"robustlens-{s.name}-"))
            try:
                ctx = StageContext(name=s.name, params=s.params, out=scratch, work=self.work_dir(s.name), deps={},
                                   shared=self.shared, log=lambda msg: None)
                s.fn(ctx)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

    def _execute(self, s: StageDef, h: str, final: Path, outputs: dict[str, StageOutput]) -> StageOutput:
        stages_root = final.parent
        stages_root.mkdir(parents=True, exist_ok=True)
        tmp = stages_root / f".tmp-{s.name}-{h}"
        if tmp.exists():  # left by a killed run: its partial files are not trusted
            shutil.rmtree(tmp)
        tmp.mkdir()
        work = self.work_dir(s.name)
        ctx = StageContext(
            name=s.name,
            params=s.params,
            out=tmp,
            work=work,
            deps={d: outputs[d] for d in s.deps},
            shared=self.shared,
            log=lambda msg: self._print(f"      {msg}"),
        )
        try:
            with stage_scope(s.name):
                result = s.fn(ctx)
        except NotMeasured as e:
            shutil.rmtree(tmp, ignore_errors=True)
            return StageOutput(s.name, h, None, {"status": "not_measured", "reason": str(e)}, "not_measured")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if isinstance(result, StageResult):
            result = result.to_dict()
        if not isinstance(result, dict):
            raise TypeError(f"stage {s.name} returned {type(result).__name__}, expected a StageResult or a dict")
        from robustlens.io import write_json_atomic

        write_json_atomic(tmp / "result.json", result)
        write_json_atomic(
            tmp / "done.json",
            {"stage": s.name, "hash": h, "params": s.params, "deps": {d: self.hashes[d] for d in s.deps}, "version": self.version},
        )
        _fsync_dir(tmp)
        if final.exists():  # another process finished it first; keep theirs
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
            _fsync_dir(stages_root)
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
        # Always hand downstream stages the result as read back from disk, so a fresh run
        # and a cached run see byte-identical values.
        return StageOutput(s.name, h, final, _read_result(final), "done")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def check_run_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder; choose another out_dir or name")
