"""The faithfulness stage: its spec checks, one method x model measured, and the two claims' rules."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from robustlens.errors import UserError
from robustlens.explain.map_metrics import METRICS, MapMetricSettings, measure
from robustlens.models import create
from robustlens.study.claims import FAITHFUL_MARGIN, evaluate_claims
from robustlens.study.spec import DEFAULT_SPEC_PATH, parse_spec

pytestmark = pytest.mark.usefixtures("one_thread")


def _spec(extra: str):
    return parse_spec(DEFAULT_SPEC_PATH.read_text().replace("[stages.faithfulness]\n", "[stages.faithfulness]\n" + extra, 1))


@pytest.mark.parametrize("line,msg", [
    ("road_fractions = [0.0, 0.5]\n", "strictly between 0 and 1"),
    ("road_fractions = [0.5, 1.0]\n", "strictly between 0 and 1"),
    ("baseline = 'white'\n", "expected a number or 'mean'"),
    ("steps = 0\n", "expected a positive integer"),
])
def test_spec_refuses_bad_values(line, msg):
    text = DEFAULT_SPEC_PATH.read_text()
    key = line.split("=")[0].strip()
    kept = "\n".join(l for l in text.splitlines() if not l.startswith(key + " "))
    with pytest.raises(UserError, match=msg) as e:
        parse_spec(kept.replace("[stages.faithfulness]\n", "[stages.faithfulness]\n" + line, 1))
    assert f"stages.faithfulness.{key}" in str(e.value)


def test_measure_gives_every_metric():
    torch.manual_seed(0)
    model = create("small_cnn", 10, width=8).eval()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    p = {**dataclasses.asdict(_spec("").stages.faithfulness), "steps": 4, "road_fractions": [0.3, 0.7]}
    for method in ("vanilla", "deeplift"):
        numbers, curves = measure(model, x, y, method, MapMetricSettings.of(p), seed=5)
        assert set(numbers) == set(METRICS)
        assert all(v == v for v in numbers.values())  # no NaN
        assert len(curves["deletion"]) == 5 and len(curves["road_morf"]) == 2
        assert 0 <= numbers["road_morf"] <= 1 and numbers["max_sensitivity"] >= 0


def test_claims_follow_their_rules():
    def res(std_gap, adv_gap, std_sens, adv_sens):
        per = lambda g, s: {"vanilla": {"road_gap": g, "max_sensitivity": s}, "deeplift": {"road_gap": g, "max_sensitivity": s}}
        return {"faithfulness": {"models": {"std": per(std_gap, std_sens), "adv": per(adv_gap, adv_sens)}}}

    def verdicts(r):
        return {c["id"]: c["verdict"] for c in evaluate_claims(r)}

    v = verdicts(res(0.1, 0.1 + FAITHFUL_MARGIN + 0.01, 1.0, 0.5))
    assert v["faithful_maps"] == "holds" and v["stable_maps"] == "holds"
    v = verdicts(res(0.1, 0.1 + FAITHFUL_MARGIN - 0.01, 1.0, 0.95))
    assert v["faithful_maps"] == "does not hold" and v["stable_maps"] == "does not hold"
    assert verdicts({})["faithful_maps"] == "not measured"
