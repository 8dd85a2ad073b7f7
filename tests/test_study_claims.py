"""Claims: verdicts follow the numbers by the stated rules; missing numbers -> "not measured".
The report renders every section, including stages that were not measured (no torch needed)."""

from __future__ import annotations

from pathlib import Path

from robustlens.study.claims import CLAIMS, evaluate_claims
from robustlens.study.report import render_report
from robustlens.study.runner import StageOutput


def _results(std_shape=0.2, adv_shape=0.9, std_clean=1.0, adv_clean=0.85):
    curve = lambda a: {"levels": [0, 1, 2], "accuracy": a, "level_name": "x"}  # noqa: E731
    return {
        "data": {"classes": [str(i) for i in range(10)]},
        "robustness": {"models": {"std": {"clean_accuracy": std_clean, "robust_accuracy": 0.01},
                                  "adv": {"clean_accuracy": adv_clean, "robust_accuracy": 0.5}}},
        "bias": {"models": {"std": {"shape_bias": std_shape}, "adv": {"shape_bias": adv_shape}}},
        "transforms": {"models": {
            "std": {"clean": 1.0, "invert": 0.5, "stylize": 0.3, "silhouette": 0.2,
                    "blur": curve([1.0, 0.6, 0.3]), "median": curve([1.0, 0.5, 0.2])},
            "adv": {"clean": 0.85, "invert": 0.4, "stylize": 0.6, "silhouette": 0.5,
                    "blur": curve([0.85, 0.5, 0.2]), "median": curve([0.85, 0.7, 0.6])}}},
    }


def _verdicts(res):
    return {c["id"]: c for c in evaluate_claims(res)}


def test_verdicts_follow_the_rules():
    v = _verdicts(_results())
    assert v["clean_tradeoff"]["verdict"] == "holds" and v["clean_tradeoff"]["numbers"]["STD - ADV"] == 0.15
    assert v["robust_gain"]["verdict"] == "holds"
    assert v["shape_bias"]["verdict"] == "holds" and v["shape_bias"]["numbers"]["ADV - STD"] == 0.7
    assert v["median"]["verdict"] == "holds"
    assert v["stylised"]["verdict"] == "holds" and v["silhouettes"]["verdict"] == "holds"
    assert v["reversal"]["verdict"] == "holds"  # drops 0.5 and 0.45
    assert v["blur_gap"]["verdict"] == "holds"  # both drop; gap 0.15 -> 0.1
    v2 = _verdicts(_results(std_shape=0.5, adv_shape=0.55, adv_clean=1.0))
    assert v2["shape_bias"]["verdict"] == "does not hold" and v2["clean_tradeoff"]["verdict"] == "does not hold"


def test_missing_numbers_are_not_measured_and_never_have_a_verdict():
    v = _verdicts({"robustness": {"status": "not_measured", "reason": "x"}})
    assert len(v) == len(CLAIMS)
    for c in v.values():
        assert c["verdict"] == "not measured" and c["numbers"] == {} and "note" in c


def test_report_renders_all_sections_with_unmeasured_stages(tmp_path: Path):
    outputs = {
        "data": StageOutput("data", "h", tmp_path, {"classes": ["a"], "splits": {}, "figures": {}}, "done"),
        "robustness": StageOutput("robustness", "h", None, {"status": "not_measured", "reason": "no attacks module"}, "not_measured"),
    }
    results = {"config": {"name": "x", "models": {}, "threat": {"norm": "linf", "eps": "8/255"}},
               "claims": evaluate_claims({}), "versions": {}, "stages": {}}
    html = render_report(results, outputs)
    assert "no attacks module" in html and "not measured" in html
    assert html.count("<h2") >= 13 and "<script" not in html
