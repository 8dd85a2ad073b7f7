"""Every faithfulness and stability number of one saliency method on one model, in one call.

The study's ``faithfulness`` stage and ``robustlens explain --metrics`` both call
:func:`measure`, so the two can never disagree. Groups of metrics (``GROUPS``):

* ``faithfulness``: deletion and insertion areas (Samek et al. 2017; Petsiuk et al. 2018),
  ROAD most- and least-relevant first and their gap (Rong et al. 2022), relative infidelity
  (Yeh et al. 2019), from :mod:`robustlens.explain.faithfulness`;
* ``sensitivity``: max-sensitivity (Yeh et al. 2019) and the local Lipschitz estimate
  (Alvarez-Melis & Jaakkola 2018), from :mod:`robustlens.explain.stability`.

Every random draw comes from generators seeded from ``seed`` (the method's own noise from
``seed``, ROAD's imputation noise ``seed + 1``, infidelity's ``seed + 2``, the sensitivity
ball ``seed + 3``), so a rerun gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from robustlens.errors import UserError

GROUPS: dict[str, tuple[str, ...]] = {
    "faithfulness": ("deletion_auc", "insertion_auc", "road_morf", "road_lerf", "road_gap", "infidelity"),
    "sensitivity": ("max_sensitivity", "lipschitz"),
}
METRICS: tuple[str, ...] = GROUPS["faithfulness"] + GROUPS["sensitivity"]


@dataclass(frozen=True)
class MapMetricSettings:
    """How the metrics are measured (the study's ``[stages.faithfulness]`` holds the same keys)."""

    baseline: str | float = "mean"
    steps: int = 10
    ranking: str = "abs"
    road_fractions: tuple[float, ...] = field(default=(0.1, 0.3, 0.5, 0.7, 0.9))
    road_noise: float = 0.01
    infidelity_samples: int = 10
    infidelity_std: float = 0.1
    sensitivity_samples: int = 5
    sensitivity_radius: float = 0.02
    smoothgrad_samples: int = 20
    ig_steps: int = 20
    batch_size: int = 128

    @classmethod
    def of(cls, values: dict) -> "MapMetricSettings":
        """The settings among ``values`` (e.g. a stage's parameters); other keys are ignored."""
        names = cls.__dataclass_fields__
        kw = {k: v for k, v in values.items() if k in names}
        if "road_fractions" in kw:
            kw["road_fractions"] = tuple(kw["road_fractions"])
        return cls(**kw)


def parse_groups(text: str, key: str = "--metrics") -> tuple[str, ...]:
    """``"faithfulness,sensitivity"`` -> the groups, each checked (a one-line error names the unknown one)."""
    from robustlens.registry import unknown_name

    groups = tuple(dict.fromkeys(g.strip() for g in str(text).split(",") if g.strip()))
    if not groups:
        raise UserError(f"{key}: expected some of {', '.join(GROUPS)}, got an empty list")
    for g in groups:
        if g not in GROUPS:
            raise unknown_name("metric group", g, tuple(GROUPS), key)
    return groups


def method_options(method: str, settings: MapMetricSettings, seed: int) -> dict:
    """The options of ``method`` under these settings (its own noise seeded from ``seed``)."""
    if method in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        return {"n_samples": settings.smoothgrad_samples, "generator": torch.Generator().manual_seed(seed)}
    if method == "gradient_shap":
        return {"generator": torch.Generator().manual_seed(seed)}
    if method in ("ig", "ig_path_average"):
        return {"steps": settings.ig_steps}
    return {}


def _faithfulness(model, x, y, maps, s: MapMetricSettings, seed: int) -> tuple[dict, dict]:
    from robustlens.explain import faithfulness as fa

    kw = {"ranking": s.ranking, "internal_batch_size": s.batch_size}
    dele = fa.deletion_curve(model, x, y, maps, baseline=s.baseline, steps=s.steps, **kw)
    ins = fa.insertion_curve(model, x, y, maps, baseline=s.baseline, steps=s.steps, **kw)
    rd = fa.road(model, x, y, maps, fractions=list(s.road_fractions), noise=s.road_noise,
                 generator=torch.Generator().manual_seed(seed + 1), **kw)
    inf = fa.infidelity(model, x, y, maps, n_samples=s.infidelity_samples, noise_std=s.infidelity_std,
                        generator=torch.Generator().manual_seed(seed + 2), normalize=True, relative=True,
                        internal_batch_size=s.batch_size)
    numbers = {"deletion_auc": float(dele["auc"].mean()), "insertion_auc": float(ins["auc"].mean()),
               "road_morf": float(sum(rd["morf"]["accuracy"]) / len(rd["fractions"])),
               "road_lerf": float(sum(rd["lerf"]["accuracy"]) / len(rd["fractions"])), "road_gap": rd["gap"],
               "infidelity": float(inf.mean())}
    curves = {"deletion": dele["scores"].mean(0).tolist(), "road_morf": rd["morf"]["accuracy"], "road_lerf": rd["lerf"]["accuracy"]}
    return numbers, curves


def _sensitivity(model, x, y, method: str, opts: dict, s: MapMetricSettings, seed: int) -> dict:
    from robustlens.explain import stability as st

    opts = {k: v for k, v in opts.items() if k != "generator"}
    ch = st.explanation_changes(model, x, y, method, radius=s.sensitivity_radius, n_samples=s.sensitivity_samples,
                                generator=torch.Generator().manual_seed(seed + 3), method_seed=seed,
                                internal_batch_size=s.batch_size, **opts)
    return {"max_sensitivity": float(st.sensitivity_from(ch).mean()), "lipschitz": float(st.lipschitz_from(ch).mean())}


def measure(model: nn.Module, x: Tensor, y: Tensor, method: str, settings: MapMetricSettings | None = None, *,
            seed: int = 0, groups: tuple[str, ...] = tuple(GROUPS)) -> tuple[dict, dict]:
    """The metrics of ``groups`` for ``method`` on ``model`` (means over the images): ``(numbers, curves)``;
    ``curves`` holds the mean deletion curve and the ROAD accuracies (empty without ``faithfulness``)."""
    from robustlens.explain.saliency import saliency

    s = settings or MapMetricSettings()
    opts = method_options(method, s, seed)
    numbers: dict[str, float] = {}
    curves: dict = {}
    if "faithfulness" in groups:
        maps = saliency(model, x, y, method, internal_batch_size=s.batch_size, **opts).detach()
        numbers, curves = _faithfulness(model, x, y, maps, s, seed)
    if "sensitivity" in groups:
        numbers.update(_sensitivity(model, x, y, method, opts, s, seed))
    return numbers, curves
