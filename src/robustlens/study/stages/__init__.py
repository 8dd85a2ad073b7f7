"""The study's stages, one module per stage, built into a DAG from a
:class:`~robustlens.study.spec.Spec` by :func:`build_stages` (:mod:`.dag`).

A stage module holds ``NAME``, ``params(spec)`` (what its hash covers), ``deps(spec)`` (the
stages it consumes) and ``run(ctx) -> StageResult`` (:class:`~robustlens.study.result.StageResult`:
its numbers, figures, captions, tables and summary; the numbers are listed in
``docs/results-schema.md``). A stage gathers what the library computes (``probes/``,
``explain/``, ``attacks/``, ``transfer/``) and draws through :mod:`robustlens.plot`; the
shared context (spec, device, seeds, the data memo, model loading) is :mod:`.context`.

A new stage: a module here with those four names, listed in ``dag.ANALYSIS`` (and in
``SEED_OFFSETS`` when it draws random numbers), a section in ``report.py`` and its keys in
``docs/results-schema.md``.
"""

from robustlens.study.stages.context import (SEED_OFFSETS, analysis_models, eval_subset, file_sha256, load_data, load_model,
                                             load_target_splits, spec_device)
from robustlens.study.stages.dag import STAGE_CODE, build_stages, implementations
from robustlens.study.stages.train import check_checkpoint_classes
from robustlens.study.stages.train import run as stage_train

__all__ = ["SEED_OFFSETS", "STAGE_CODE", "analysis_models", "build_stages", "check_checkpoint_classes", "eval_subset",
           "file_sha256", "implementations", "load_data", "load_model", "load_target_splits", "spec_device", "stage_train"]
