"""Probes (Itazuri et al. 2019, Sec. 4.1; Chen et al. 2020): accuracy under input
transformations, cue-conflict shape / texture / colour bias, neuron smoothness and selectivity.

    from robustlens.probes import PROBES, get_probe, evaluate_probes
    rows = evaluate_probes({"std": std, "adv": adv}, test_set, ["blur", "median", "invert"])

Submodules: ``transforms`` (the transformations and the registry), ``evaluate`` (accuracy
tables and curves), ``bias`` (cue-conflict bias, contrast sweep), ``neurons`` (smoothness,
concept selectivity), ``adain`` (AdaIN style transfer from user-supplied weights), ``cli``.
"""

from robustlens.probes.transforms import PROBES, Probe, ProbeContext, get_probe

__all__ = ["PROBES", "Probe", "ProbeContext", "get_probe", "evaluate_probes", "cue_conflict_bias", "model_bias"]


def __getattr__(name: str):  # lazy: keeps `import robustlens.probes` light
    if name == "evaluate_probes":
        from robustlens.probes.evaluate import evaluate_probes

        return evaluate_probes
    if name in ("cue_conflict_bias", "model_bias"):
        from robustlens.probes import bias

        return getattr(bias, name)
    raise AttributeError(name)
