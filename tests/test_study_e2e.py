"""End to end: a tiny study writes report.html and results.json; a rerun is fully cached and
writes the same results.json; the report loads in a real headless browser."""

from __future__ import annotations

import io
import json
import re
import shutil
import time
from pathlib import Path

import pytest

from helpers_study import write_tiny_spec
from robustlens.study import load_spec, run_study

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    spec_path = write_tiny_spec(folder)
    log = io.StringIO()
    summary = run_study(load_spec(spec_path), stream=log)
    return folder, spec_path, summary, log.getvalue()


def test_tiny_study_writes_report_results_and_checkpoints(tiny_run):
    folder, _, summary, log = tiny_run
    run = folder / "runs" / "tiny"
    results = json.loads((run / "results.json").read_text())
    assert results["schema"] == "robustlens.study/1"
    assert results["config"]["name"] == "tiny"
    for stage in ("data", "train_std", "train_adv", "robustness", "transforms", "bias", "saliency", "featvis", "sanity"):
        assert results["stages"][stage]["status"] == "measured", (stage, results["results"][stage])
    rob = results["results"]["robustness"]["models"]
    for m in ("std", "adv"):
        assert 0 <= rob[m]["robust_accuracy"] <= rob[m]["clean_accuracy"] <= 1
    assert set(results["results"]["saliency"]["methods"]) == {"vanilla", "loss", "guided", "smoothgrad", "ig"}
    # every claim has a verdict, and a verdict other than "not measured" always has numbers
    for c in results["claims"]:
        assert c["verdict"] in ("holds", "does not hold", "not measured")
        assert (c["verdict"] == "not measured") == (not c["numbers"]), c
    assert (run / "checkpoints" / "std.safetensors").exists() and (run / "checkpoints" / "adv.json").exists()
    timings = json.loads((run / "timings.json").read_text())
    assert set(timings["stages"]) == set(results["stages"])
    # no wall-clock values inside results.json
    assert "seconds" not in json.dumps(results["results"])
    assert "report.html" in log and log.count("running ...") == len(results["stages"])
    html = (run / "report.html").read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert html.count("data:image/png;base64,") >= 10
    for section in ("Clean and robust accuracy", "Saliency", "Feature visualisation", "Sanity", "Transformations",
                    "Shape versus texture", "claims"):
        assert section in html


def test_rerun_is_cached_fast_and_identical(tiny_run):
    folder, spec_path, first, _ = tiny_run
    run = folder / "runs" / "tiny"
    before = (run / "results.json").read_bytes()
    log = io.StringIO()
    t0 = time.perf_counter()
    again = run_study(load_spec(spec_path), stream=log)
    seconds = time.perf_counter() - t0
    assert all(o.status in ("cached", "not_measured") for o in again["outputs"].values()), log.getvalue()
    assert "running ..." not in log.getvalue() or "generation" in log.getvalue()
    assert (run / "results.json").read_bytes() == before
    assert seconds < 10, seconds


def test_changed_probe_parameter_reruns_only_that_stage(tiny_run, tmp_path):
    folder, spec_path, _, _ = tiny_run
    text = spec_path.read_text().replace("blur_sigmas = [0.0, 2.0]", "blur_sigmas = [0.0, 1.0]")
    p2 = folder / "tiny_blur.toml"
    p2.write_text(text)
    log = io.StringIO()
    out = run_study(load_spec(p2), stream=log)["outputs"]
    ran = {k for k, o in out.items() if o.status == "done"}
    assert ran == {"transforms"}, log.getvalue()
    assert out["transforms"].result["models"]["std"]["blur"]["levels"] == [0.0, 1.0]


def test_report_loads_in_headless_chromium(tiny_run, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no browser: {CHROMIUM} is not installed (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    folder = tiny_run[0]
    report = folder / "runs" / "tiny" / "report.html"
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.resolve().as_uri(), wait_until="load")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.alt])")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert len(images) >= 10
    assert all(complete and width > 0 for complete, width, _ in images), [alt for c, w, alt in images if not (c and w > 0)]
    assert errors == []
    assert all(re.match(r"^(file:|data:)", u) for u in requests), requests
    assert shot.stat().st_size > 10_000
    shutil.copy(shot, folder / "report_screenshot.png")
