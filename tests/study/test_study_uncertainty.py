"""Verdicts carry their uncertainty (issue 20, item 5): intervals against independent values,
and a claim on its threshold is "inconclusive"."""

from __future__ import annotations

import pytest

from robustlens.study.claims import (FAILS, HOLDS, INCONCLUSIVE, Compare, Majority, evaluate_claims, newcombe,
                                     newcombe_paired, wilson)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (495, 500), (500, 500), (7, 20)])
def test_wilson_matches_scipy(k, n):
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_newcombe_matches_the_paper():
    # Newcombe (1998), Stat. Med. 17:873, Table II example (a): 56/70 - 48/80, method 10
    lo, hi = newcombe(56, 70, 48, 80)
    assert lo == pytest.approx(0.0524, abs=1e-4) and hi == pytest.approx(0.3339, abs=1e-4)


def test_newcombe_paired_reduces_to_the_independent_form_without_correlation():
    # e*h == f*g: phi = 0, so the paired interval is the independent one on the two margins
    assert newcombe_paired(10, 10, 10, 10) == pytest.approx(newcombe(20, 40, 20, 40))
    # positive correlation (the usual case for two models on the same images) narrows it
    lo_p, hi_p = newcombe_paired(400, 40, 10, 50)
    lo_i, hi_i = newcombe(440, 500, 410, 500)
    assert lo_i < lo_p < 0.06 < hi_p < hi_i


def _robustness(std_clean: int, adv_clean: int, n: int = 500) -> dict:
    m = lambda k: {"clean_accuracy": k / n, "n": n, "robust_accuracy": 0.5, "robust": n // 2, "robust_n": n}  # noqa: E731
    return {"robustness": {"models": {"std": {**m(std_clean), "robust_accuracy": 0.0, "robust": 0},
                                      "adv": m(adv_clean)}},
            "data": {"classes": [str(i) for i in range(10)]}}


def _verdict(res: dict, cid: str) -> dict:
    return {c["id"]: c for c in evaluate_claims(res)}[cid]


def test_clean_tradeoff_on_its_threshold_is_inconclusive():
    # issue 20: STD - ADV = 0.010000000000000009 against "> 0.01" (5 images of 500) used to "hold"
    res = _robustness(450, 445)
    assert res["robustness"]["models"]["std"]["clean_accuracy"] - res["robustness"]["models"]["adv"]["clean_accuracy"] > 0.01
    c = _verdict(res, "clean_tradeoff")
    assert c["verdict"] == INCONCLUSIVE
    t = c["tests"][0]
    assert t["counts"] == {"STD clean": "450/500", "ADV clean": "445/500"} and t["interval"][0] < 0.01 < t["interval"][1]


def test_clean_tradeoff_clear_either_way():
    assert _verdict(_robustness(495, 455), "clean_tradeoff")["verdict"] == HOLDS
    assert _verdict(_robustness(440, 470), "clean_tradeoff")["verdict"] == FAILS


def test_a_point_comparison_on_the_boundary_is_inconclusive():
    # no interval (a property of the weights): equal to the threshold within floating point
    assert Compare("x", 0.1 + 0.2 - 0.2, ">", 0.1).verdict() == INCONCLUSIVE
    assert Compare("x", 0.95 * 0.2 / 0.2, "<", 0.95).verdict() == INCONCLUSIVE
    assert Compare("x", 0.2, ">", 0.1).verdict() == HOLDS and Compare("x", 0.05, ">", 0.1).verdict() == FAILS
    assert Compare("x", 0.5, "<", 0.95, interval=(0.9, 0.99)).verdict() == INCONCLUSIVE


def test_majority_counts_inconclusive_parts_both_ways():
    h, f, i = (Compare("h", 1.0, ">", 0.0), Compare("f", -1.0, ">", 0.0), Compare("i", 0.0, ">", 0.0))
    assert Majority((h, h, f)).verdict() == HOLDS
    assert Majority((h, i, f)).verdict() == INCONCLUSIVE
    assert Majority((f, i, f)).verdict() == FAILS


def test_filters_smaller_on_the_boundary_is_inconclusive():
    res = {**_robustness(495, 455), "neurons": {"models": {"std": {"first_layer_norm": 0.2}, "adv": {"first_layer_norm": 0.95 * 0.2}}}}
    assert _verdict(res, "filters_smaller")["verdict"] == INCONCLUSIVE


def test_paired_interval_is_of_the_images_the_accuracies_count():
    """Regression: the robustness stage once kept the clean 2 x 2 table of the headline's 100
    images while the clean accuracies counted 500, so the 'paired' interval of 494/500 vs 448/500
    was [0.002, 0.128] (of another sample, and 2.5x too wide): the claim was 'inconclusive'."""
    from robustlens.study.claims import evaluate_claims

    def results(table_n: int) -> dict:
        models = {"std": {"clean_accuracy": 0.988, "n": 500, "robust_accuracy": 0.0, "robust_n": 100},
                  "adv": {"clean_accuracy": 0.896, "n": 500, "robust_accuracy": 0.82, "robust_n": 100}}
        big = {"both": 447, "std_only": 47, "adv_only": 1, "neither": 5, "n": 500}
        small = {"both": 92, "std_only": 7, "adv_only": 1, "neither": 0, "n": 100}
        return {"robustness": {"models": models, "paired": {"clean": big if table_n == 500 else small}}}

    for table_n in (100, 500):
        claim = next(c for c in evaluate_claims(results(table_n)) if c["id"] == "clean_tradeoff")
        lo, hi = claim["tests"][0]["interval"]
        assert lo <= 0.092 <= hi and hi - lo < 0.08 and lo > 0.05, (table_n, lo, hi)
        assert claim["verdict"] == "holds"
