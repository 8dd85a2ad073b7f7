"""The stage DAG of a spec: which stages run, with which parameters, consuming what.

    data -> train_<model> (one per model; train or load) -> robustness
                                                         -> transforms, bias, neurons
                                                         -> saliency, featvis, sanity,
                                                            localisation, generation
                                                         -> transfer, construct (opt-in)
    regime (opt-in; no input: it renders and trains its own small worlds)

``transfer`` consumes train_std, train_adv and, for ``std+std`` / ``adv+adv``, a second model
of that kind: the one named by ``stages.transfer.second_std`` / ``second_adv``, or else
``train_transfer_std2`` / ``train_transfer_adv2``, extra train stages added to the DAG (the
first model's recipe with ``seed + 1``; cached and resumable like every train stage, and
left out of the analysis stages). ``construct`` consumes train_std (D_det, D_rand) and
train_adv (D_R).

Each stage hashes only its own parameters (plus, through the DAG, its inputs), so a change to
e.g. ``stages.transforms.blur_sigmas`` reruns ``transforms`` only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from robustlens.study.runner import StageDef
from robustlens.study.spec import ModelSpec, Spec, checkpoint_file, parse_eps, transfer_second_models
from robustlens.study.stages import (bias, construct, data, featvis, generation, localisation, neurons, regime,
                                     robustness, saliency, sanity, train, transfer, transforms)
from robustlens.study.stages import faithfulness, stimuli
from robustlens.study.stages.context import file_sha256

# The analysis stages, in the order they run (each module: NAME, params(spec), deps(spec), run(ctx)).
ANALYSIS = (robustness, transforms, bias, stimuli, neurons, saliency, featvis, sanity, faithfulness, localisation,
            generation, transfer, construct, regime)

# Bumped whenever a train or analysis stage's output changes shape (or training changes what it
# returns), so old cached folders are not reused. 6: the headline robust accuracy, the best
# epoch kept by check-PGD, catastrophic-overfitting fallback, greyscale skips, stimuli.
STAGE_CODE = 6

_IMPL_FILES = {
    "robustness": ("attacks/evaluate.py", "attacks/pgd.py", "attacks/apgd.py"),
    "transforms": ("probes/evaluate.py",),
    "bias": ("probes/bias.py",),
    "neurons": ("probes/neurons.py",),
    "saliency": ("explain/saliency.py",),
    "featvis": ("explain/featvis.py",),
    "sanity": ("explain/sanity.py",),
    "faithfulness": ("explain/faithfulness.py", "explain/stability.py"),
    "localisation": ("explain/localize.py",),
    "generation": ("explain/generate.py",),
    "transfer": ("transfer/fusion.py",),
    "construct": ("transfer/construct.py",),
    "regime": ("data/trifeature.py", "train/loop.py", "attacks/pgd.py", "probes/bias.py"),
    "stimuli": ("data/stimuli.py", "probes/stimuli.py"),
}


def implementations(stage: str) -> list[str]:
    """Which of the library modules a stage uses are present (file checks, no imports; a module
    that became a package, ``x.py`` -> ``x/``, still counts as ``x.py``): part of the stage's
    hash since the study's first runs, kept so the hashes of cached stages hold."""
    import robustlens

    root = Path(robustlens.__file__).parent
    return [f for f in _IMPL_FILES.get(stage, ()) if (root / f).exists() or (root / f.removesuffix(".py") / "__init__.py").exists()]


def _train_stage(spec: Spec, name: str, m: ModelSpec, eps_of: ModelSpec) -> StageDef:
    """``train_<name>`` for model spec ``m`` (its eps: ``eps_of.eps``, else the threat's)."""
    threat_eps = parse_eps(spec.threat.eps, name="threat.eps")
    params: dict[str, Any] = {"model": name, "spec": dataclasses.asdict(m), "threat_norm": spec.threat.norm,
                              "eps": parse_eps(eps_of.eps, name="eps") if eps_of.eps != "" else threat_eps}
    params["stage_code"] = STAGE_CODE
    if m.checkpoint:
        params["checkpoint_sha256"] = file_sha256(checkpoint_file(m.checkpoint))  # NAME@PATH: the file
    return StageDef(f"train_{name}", train.run, params, ("data",))


def _train_stages(spec: Spec) -> tuple[list[StageDef], list[StageDef]]:
    """The train stages of the spec's models, and those of the second transfer backbones the
    study trains itself (the first one's recipe with seed + 1)."""
    st = spec.stages
    # a helper model (a generation judge, a named second transfer backbone) is trained only
    # when the stage that uses it runs
    judges = {st.generation.judge, st.generation.judge_adv}
    needed = (judges if st.generation.enabled else set()) | (
        set(transfer_second_models(spec).values()) if st.transfer.enabled else set())
    unused = (judges | {st.transfer.second_std, st.transfer.second_adv}) - {"", "std", "adv"} - needed
    own = [_train_stage(spec, name, m, m) for name, m in spec.models.items() if name not in unused]
    seconds = transfer_second_models(spec) if st.transfer.enabled else {}
    extra = [_train_stage(spec, name, dataclasses.replace(spec.models[kind], seed=int(spec.models[kind].seed) + 1), spec.models[kind])
             for kind, name in seconds.items() if name not in spec.models]
    return own, extra


def build_stages(spec: Spec) -> list[StageDef]:
    """The stage DAG for ``spec`` (disabled stages are left out)."""
    own, extra_train = _train_stages(spec)
    stages = [StageDef(data.NAME, data.run, data.params(spec), data.deps(spec), "data"), *own]
    for stage in ANALYSIS:
        params = stage.params(spec)
        if not params.pop("enabled", True):
            continue
        if stage is transfer:  # added just before transfer, so the main analysis comes first
            stages.extend(extra_train)
        params["implementations"] = implementations(stage.NAME)
        params["stage_code"] = STAGE_CODE
        stages.append(StageDef(stage.NAME, stage.run, params, tuple(stage.deps(spec))))
    return stages
