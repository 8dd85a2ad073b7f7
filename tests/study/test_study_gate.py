"""The validity gate (issue 20, item 3): an ADV model that is not robust turns every STD-vs-ADV
claim into "not measured", and the report opens with the warning."""

from __future__ import annotations

from robustlens.study.claims import NOT_MEASURED, evaluate_claims, validity_gate
from robustlens.study.report import render_report


def _results(adv_robust: int, std_robust: int = 0, n: int = 500) -> dict:
    def m(clean: int, robust: int) -> dict:
        return {"clean_accuracy": clean / n, "n": n, "robust_accuracy": robust / n, "robust": robust, "robust_n": n,
                "robust_attack": "worst case per image of PGD-20 (1 restart) and AutoAttack-style (reduced: APGD-CE)"}

    return {"data": {"classes": [str(i) for i in range(10)]},
            "robustness": {"models": {"std": m(495, std_robust), "adv": m(482, adv_robust)}},
            "bias": {"models": {"std": {"shape_bias": 0.05}, "adv": {"shape_bias": 0.8}}},
            "construct": {"chance": 0.1, "datasets": {"det": {"clean_accuracy": 0.5, "n": 500}}}}


def test_non_robust_adv_makes_paired_claims_not_measured_and_the_report_warns_first():
    res = _results(adv_robust=0)  # catastrophic overfitting: ADV 0.000 under the headline attack
    gate = validity_gate(res)
    assert gate["status"] == "adv not robust" and "0.000" in gate["reason"]
    claims = {c["id"]: c for c in evaluate_claims(res)}
    for cid in ("clean_tradeoff", "robust_gain", "shape_bias"):
        assert claims[cid]["verdict"] == NOT_MEASURED
        assert claims[cid]["note"].startswith("not measured: the ADV model is not robust (ADV 0.000 (0/500")
    assert claims["nonrobust_dataset"]["verdict"] == "holds"  # not an STD-vs-ADV claim: judged as usual
    html = render_report({"config": {"name": "x"}, "validity": gate, "claims": list(claims.values()), "versions": {}, "stages": {}}, {})
    body = html[html.index("<body>"):]
    warn = body.index('class="warn"')
    assert warn < body.index("<nav>") < body.index('id="glance"')
    assert "catastrophic" in body[warn: body.index("<nav>")]


def test_adv_above_std_but_not_above_chance_is_not_robust():
    gate = validity_gate(_results(adv_robust=40))  # 0.08 with 10 classes: above STD, below chance
    assert gate["status"] == "adv not robust"


def test_robust_adv_passes_and_a_robust_std_is_warned_about():
    gate = validity_gate(_results(adv_robust=380))
    assert gate["status"] == "ok" and gate["warnings"] == []
    claims = {c["id"]: c for c in evaluate_claims(_results(adv_robust=380))}
    assert claims["robust_gain"]["verdict"] == "holds" and claims["shape_bias"]["verdict"] == "holds"
    gate = validity_gate(_results(adv_robust=380, std_robust=150))
    assert gate["status"] == "ok" and any('"STD" model is robust' in w for w in gate["warnings"])


def test_tiny_study_with_a_non_robust_adv_model_is_gated(tmp_path, one_thread):
    """End to end: the tiny spec's ADV model (1 epoch of FGSM-RS, width 4; a spec refuses
    mode = "std" for ADV) is no more robust than STD on the ensemble's images."""
    import json

    from robustlens.cli import main
    from helpers_study import write_tiny_spec

    spec = write_tiny_spec(tmp_path)
    assert main(["study", str(spec), "--only", "robustness"]) == 0
    run = tmp_path / "runs" / "tiny"
    res = json.loads((run / "results.json").read_text())
    assert res["validity"]["status"] == "adv not robust"
    v = {c["id"]: c for c in res["claims"]}
    assert v["clean_tradeoff"]["verdict"] == NOT_MEASURED and "the ADV model is not robust" in v["clean_tradeoff"]["note"]
    html = (run / "report.html").read_text()
    assert html.index('class="warn"') < html.index('id="glance"')
