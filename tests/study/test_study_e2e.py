"""End to end: a tiny study (transfer and construct stages included) writes report.html and
results.json; a rerun is fully cached and writes the same results.json; recomputing a stage
gives the same numbers; the report loads in a real headless browser."""

from __future__ import annotations

import io
import json
import re
import shutil
import time
from pathlib import Path

import pytest

from robustlens.study import load_spec, run_study
from robustlens.study.spec import PAPER_SALIENCY_METHODS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine, two OpenMP threads competing with other
    processes make these tiny convolutions up to 10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, one_thread, write_tiny_transfer_spec):
    folder = tmp_path_factory.mktemp("study")
    spec_path = write_tiny_transfer_spec(folder)
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
    assert set(results["results"]["saliency"]["methods"]) == set(PAPER_SALIENCY_METHODS)
    # silhouettes in both polarities; the procedural set's black background picks white-on-black
    tr = results["results"]["transforms"]
    assert {"silhouette", "silhouette_light", "edges", "edges_light"} <= set(tr["models"]["std"])
    assert tr["shape_background"]["mean_intensity"] < 0.1 and tr["shape_background"]["matched_polarity"] == "light"
    sil = next(c for c in results["claims"] if c["id"] == "silhouettes")
    assert sil["numbers"]["polarity used"].startswith("light")
    # every claim has a verdict, and a verdict other than "not measured" always has numbers; the
    # tiny models are not robust, so the validity gate keeps the numbers of every STD-vs-ADV
    # claim but draws no verdict from them
    assert results["validity"]["status"] == "adv not robust"
    for c in results["claims"]:
        assert c["verdict"] in ("holds", "does not hold", "inconclusive", "not measured")
        if c.get("gated"):
            assert c["verdict"] == "not measured" and c["note"].startswith("not measured: the ADV model is not robust")
        else:
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
    for stage in ("train_transfer_std2", "train_transfer_adv2", "transfer", "construct"):
        assert again["outputs"][stage].status == "cached", stage
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


def test_transfer_stage_runs_the_fusion_study(tiny_run):
    folder, _, summary, _ = tiny_run
    run = folder / "runs" / "tiny"
    results = json.loads((run / "results.json").read_text())
    assert results["stages"]["transfer"]["status"] == "measured", results["results"]["transfer"]
    t = results["results"]["transfer"]
    variants = ["std", "adv", "std+std", "adv+adv", "std+adv"]
    assert t["mode"] == "linear" and t["sizes"] == [16, 24] and t["variants"] == variants
    # a kind used twice gets a second model trained in the study with seed + 1
    assert t["backbones"] == {"std": ["std", "transfer_std2"], "adv": ["adv", "transfer_adv2"]}
    for name, base in (("transfer_std2", "std"), ("transfer_adv2", "adv")):
        second = results["results"][f"train_{name}"]
        assert second["config"]["seed"] == results["results"][f"train_{base}"]["config"]["seed"] + 1
        assert second["mode"] == results["results"][f"train_{base}"]["mode"]
        assert (run / "checkpoints" / f"{name}.safetensors").exists()
    assert [(x["resolution"], x["n_train"], x["n_test"]) for x in t["targets"]] == [(16, 96, 48), (24, 96, 48)]
    assert set(t["table"]) == {"16", "24"}
    for size, accs in t["table"].items():
        assert set(accs) == set(variants)
        for v, acc in accs.items():
            runs = [r["test_accuracy"] for r in t["runs"] if r["variant"] == v and r["resolution"] == int(size)]
            assert len(runs) == 1 and acc == pytest.approx(runs[0]) and 0 <= acc <= 1
            # accuracies are counts over the 48 test images
            assert acc * 48 == pytest.approx(round(acc * 48), abs=1e-4)
    assert (summary["outputs"]["transfer"].path("fusion.png")).exists()
    claims = {c["id"]: c for c in results["claims"]}
    mixed = claims["fusion_mixed"]
    assert mixed["numbers"] and mixed["gated"]  # the tiny ADV model is not robust: numbers, no verdict
    assert mixed["numbers"]["STD+ADV @ 16px"] == round(t["table"]["16"]["std+adv"], 4)
    gap24 = max(t["table"]["24"].values()) - t["table"]["24"]["std+adv"]
    assert mixed["numbers"]["gap to best @ 24px"] == round(gap24, 4)
    ok = all(max(t["table"][s].values()) - t["table"][s]["std+adv"] <= 0.02 for s in ("16", "24"))
    assert all(t["verdict"] == "holds" for t in mixed["tests"]) == ok
    assert claims["fusion"]["numbers"]
    html = (run / "report.html").read_text()
    section = html[html.index('id="transfer"'):html.index('id="construct"')]
    assert "Late fusion" in section and section.count("data:image/png;base64,") == 1 and "transfer_std2" in section


def test_construct_stage_builds_and_evaluates_the_ilyas_sets(tiny_run):
    folder, _, _, _ = tiny_run
    run = folder / "runs" / "tiny"
    results = json.loads((run / "results.json").read_text())
    assert results["stages"]["construct"]["status"] == "measured", results["results"]["construct"]
    c = results["results"]["construct"]
    assert c["n"] == 48 and c["eval_n"] == 32 and c["chance"] == pytest.approx(0.1)
    assert set(c["datasets"]) == {"original", "robust", "det", "rand"}
    for kind, d in c["datasets"].items():
        assert 0 <= d["robust_accuracy"] <= 1 and 0 <= d["clean_accuracy"] <= 1, kind
        assert d["n_train"] == 48 and d["n_test"] == 32
        assert d["attack"]["norm"] == "linf" and d["attack"]["eps"] == pytest.approx(8 / 255)
    # D_R keeps the labels; D_det always relabels (y + 1); the perturbations stay in the L2 ball
    assert c["datasets"]["robust"]["construction"]["label_changed"] == 0.0
    # the constructed sets are kept in the stage folder and read back exactly
    import torch

    from robustlens.transfer.construct import load_constructed

    stage = run / "stages" / next(p.name for p in (run / "stages").iterdir() if p.name.startswith("construct-"))
    assert c["files"] == {k: f"datasets/{k}" for k in ("robust", "det", "rand")}
    det = load_constructed(stage / c["files"]["det"])
    assert len(det) == 48 and det.kind == "det" and torch.equal(det.labels, (det.original_labels + 1) % 10)
    assert c["datasets"]["det"]["construction"]["label_changed"] == 1.0
    # the fresh models are kept as checkpoints beside the sets
    from robustlens.models.checkpoint import load_checkpoint

    assert c["models"] == {k: f"models/{k}.safetensors" for k in ("original", "robust", "det", "rand")}
    fresh, meta = load_checkpoint(stage / c["models"]["det"])
    assert meta["trained_on"] == "D_det (y+1)" and meta["construct"]["clean_accuracy"] == c["datasets"]["det"]["clean_accuracy"]
    assert not list((run / "stages").glob("*/work"))  # nothing left behind in a work folder
    for kind in ("det", "rand"):
        assert c["datasets"][kind]["construction"]["mean_l2"] <= 1.0 + 1e-4
    assert 0 <= c["datasets"]["robust"]["construction"]["relative_representation_distance"]
    claims = {x["id"]: x for x in results["claims"]}
    det = claims["nonrobust_dataset"]
    assert det["numbers"]["D_det model clean (original labels)"] == round(c["datasets"]["det"]["clean_accuracy"], 4)
    assert det["verdict"] == ("holds" if c["datasets"]["det"]["clean_accuracy"] > 0.2 else "does not hold")
    rob = claims["robust_dataset"]
    diff = c["datasets"]["robust"]["robust_accuracy"] - c["datasets"]["original"]["robust_accuracy"]
    assert rob["numbers"]["difference"] == round(diff, 4)
    assert rob["verdict"] == ("holds" if diff > 0.10 else "does not hold")
    assert claims["nonrobust_rand"]["verdict"] != "not measured"
    html = (run / "report.html").read_text()
    section = html[html.index('id="construct"'):html.index('id="claims"')]
    assert "D_R (robust)" in section and section.count("data:image/png;base64,") == 2


def test_changed_construct_parameter_reruns_only_construct(tiny_run):
    folder, spec_path, _, _ = tiny_run
    text = spec_path.read_text().replace("eval_n = 32", 'eval_n = 16\neval_threats = ["l2:0.25", "linf:2/255"]')
    assert text != spec_path.read_text()
    p2 = folder / "tiny_construct.toml"
    p2.write_text(text)
    log = io.StringIO()
    out = run_study(load_spec(p2), stream=log)["outputs"]
    ran = {k for k, o in out.items() if o.status == "done"}
    assert ran == {"construct"}, log.getvalue()
    c = out["construct"].result
    assert c["eval_n"] == 16
    for kind, d in c["datasets"].items():  # the extra threats, evaluated on the same fresh model
        assert [e["threat"] for e in d["extra_threats"]] == ["l2:0.25", "linf:2/255"], kind
        assert d["extra_threats"][1]["eps"] == pytest.approx(2 / 255)
        assert all(0 <= e["robust_accuracy"] <= d["clean_accuracy"] for e in d["extra_threats"]), kind
    header = c["tables"]["fresh models on the original test set"]["header"]
    assert header[3:5] == ["PGD-2 l2 0.25", "PGD-2 linf 2/255"], header


def test_recomputed_transfer_and_construct_give_identical_results(tiny_run):
    """What a killed-and-resumed run relies on: the stages are deterministic."""
    folder, spec_path, _, _ = tiny_run
    run = folder / "runs" / "tiny"
    run_study(load_spec(spec_path), stream=io.StringIO())  # other tests ran modified specs in this folder
    before = (run / "results.json").read_bytes()
    for stage in ("transfer", "construct"):
        (folder / f"{stage}.bak").mkdir()
        for d in (run / "stages").glob(f"{stage}-*"):
            shutil.move(str(d), str(folder / f"{stage}.bak" / d.name))
    log = io.StringIO()
    out = run_study(load_spec(spec_path), stream=log)["outputs"]
    assert {k for k, o in out.items() if o.status == "done"} == {"transfer", "construct"}, log.getvalue()
    assert (run / "results.json").read_bytes() == before
