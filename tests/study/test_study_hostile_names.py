"""Hostile strings never become markup in the report, and names cannot escape the run folder
(issue 16, items 1 and 3). On main before the fix, a model named ``<img src=z onerror=...>``
ran script in Chromium (``<h3>Training: {name}</h3>`` was not escaped), and a study named
``..`` wrote one folder above ``out_dir``."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from robustlens.errors import UserError
from robustlens.study.report import render_report
from robustlens.study.runner import StageOutput
from robustlens.study.spec import Spec, load_spec

PAYLOAD = "<img src=z onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# a 1x1 PNG, so every figure path of the report is exercised
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def _hostile_report(tmp_path: Path) -> str:
    """The report of a results.json whose every user-given string (model names, class names,
    paths, summaries, captions, table cells, claims) carries the payload."""
    name = f"m{PAYLOAD}"
    (tmp_path / "f.png").write_bytes(PNG)
    fig = {"figures": {f"fig{PAYLOAD}": "f.png"}, "captions": {f"fig{PAYLOAD}": PAYLOAD}}
    models = {name: {"arch": PAYLOAD, "mode": PAYLOAD, "checkpoint": "", "eps": PAYLOAD}}
    per_model = {name: {"clean_accuracy": 0.5, "robust_accuracy": 0.1, "shape_bias": 0.4,
                        "autoattack": {"robust_accuracy": 0.1, "n": 8, "per_attack": {PAYLOAD: 0.1}}}}
    results = {
        "config": {"name": PAYLOAD, "threat": {"norm": PAYLOAD, "eps": PAYLOAD}, "models": models},
        "claims": [{"id": "x", "paper": PAYLOAD, "claim": PAYLOAD, "rule": PAYLOAD, "verdict": PAYLOAD,
                    "numbers": {PAYLOAD: PAYLOAD}, "note": PAYLOAD}],
        "versions": {PAYLOAD: PAYLOAD},
        "stages": {PAYLOAD: {"hash": PAYLOAD, "status": PAYLOAD}},
    }
    data = {"source": PAYLOAD, "resolution": PAYLOAD, "channels": PAYLOAD, "classes": [PAYLOAD, PAYLOAD],
            "options": {PAYLOAD: PAYLOAD}, "splits": {PAYLOAD: {"images": PAYLOAD, "per_class": [PAYLOAD]}}, **fig}
    robustness = {"models": per_model, "pgd": {"steps": PAYLOAD, "restarts": PAYLOAD}, "n": PAYLOAD,
                  "autoattack_n": PAYLOAD, "threat": {PAYLOAD: PAYLOAD}, **fig}
    generic = {"models": per_model, "summary": PAYLOAD, "notes": [PAYLOAD],
               "tables": {PAYLOAD: {"header": [PAYLOAD], "rows": [[PAYLOAD]]}}, **fig}
    out = {"data": data, f"train_{name}": {"epochs": PAYLOAD, "source": PAYLOAD, **fig}, "robustness": robustness}
    for stage in ("saliency", "featvis", "sanity", "transforms", "bias", "neurons", "localisation", "generation", "transfer", "construct"):
        out[stage] = generic
    outputs = {k: StageOutput(k, "h", tmp_path, r, "done") for k, r in out.items()}
    outputs["not_measured"] = StageOutput("x", "h", None, {"reason": PAYLOAD}, "not_measured")
    return render_report(results, outputs)


def test_no_user_string_becomes_markup(tmp_path):
    html = _hostile_report(tmp_path)
    assert "<img src=z" not in html and "<script>" not in html
    assert "could not render" not in html  # every section rendered, with the payload as text
    assert html.count("&lt;img src=z") > 20


def test_hostile_report_runs_no_script_in_chromium(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no browser: {CHROMIUM} is not installed (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    report = tmp_path / "report.html"
    report.write_text(_hostile_report(tmp_path))
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(report.resolve().as_uri(), wait_until="load")
            page.wait_for_timeout(200)
            title = page.title()
            injected = page.eval_on_selector_all("img[src='z'], script", "els => els.length")
        finally:
            browser.close()
    assert title != "pwned" and "robustlens study" in title
    assert injected == 0


@pytest.mark.parametrize("name", ["..", ".", "...", "a/b", "<b>"])
def test_a_name_cannot_leave_out_dir(tmp_path, name):
    spec = tmp_path / "s.toml"
    spec.write_text(f'name = "{name}"\nout_dir = "{tmp_path / "runs"}"\n')
    with pytest.raises(UserError, match="name"):
        load_spec(spec)
    with pytest.raises(UserError, match="out_dir"):
        Spec(name=name, out_dir=str(tmp_path / "runs")).run_dir


@pytest.mark.parametrize("model", ["..", "a/b", "<img src=z onerror=alert(5)>"])
def test_model_names_are_plain(tmp_path, model):
    spec = tmp_path / "s.toml"
    spec.write_text(f'[models."{model}"]\nepochs = 1\n')
    with pytest.raises(UserError, match="model name"):
        load_spec(spec)


def test_study_cli_refuses_a_name_of_dots(tmp_path, capsys):
    from robustlens.cli import main

    assert main(["study", "--name", "..", "--out-dir", str(tmp_path)]) == 2
    assert "--name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
