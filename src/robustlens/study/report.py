"""``report.html``: one self-contained page (inline CSS, figures as base64 PNG data URIs, no
script, no external request), in the order of the main paper (Itazuri et al. 2019):

the claims at a glance (every verdict, its key number, a link to its section) -> setup and
data samples (with the procedural world's cues stated plainly) -> clean / robust accuracy -> saliency grids -> feature visualisation
-> sanity checks -> transformations (blur, median, reversal, stylisation, silhouettes) ->
shape bias -> neuron analysis -> localisation -> generation -> transfer / constructed data
sets -> the regime map -> the seeds' claims with their numbers and verdicts.

Each section reads its stage's :class:`~robustlens.study.result.StageResult`
(``StageOutput.stage_result()``): the summary, tables, figures and captions every stage
carries, and the stage's own numbers (``docs/results-schema.md``) where a section shows them.
Building it needs no torch and no matplotlib: every figure was drawn by its stage.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Callable

from robustlens.study.result import StageResult
from robustlens.study.runner import StageOutput

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:1.7em;margin-bottom:0.2em} h2{margin-top:2em;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{margin-top:1.4em} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:12px 0;font-size:0.92em;background:#fff}
th,td{border:1px solid #d0d0d0;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#f0f0f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:14px 0;background:#fff;border:1px solid #e3e3e3;padding:8px;display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto;display:block} figcaption{color:#555;font-size:0.88em;margin-top:4px}
.nm{color:#8a6d00;background:#fff8dc;padding:6px 10px;border-left:4px solid #e0b000}
.holds{color:#0a6b2d;font-weight:600} .fails{color:#a0151f;font-weight:600} .notm{color:#8a6d00;font-weight:600}
.inconc{color:#5a4a9a;font-weight:600} .warn{color:#7a0010;background:#fdecec;padding:8px 12px;border-left:5px solid #c0102a}
code{background:#f0f0f3;padding:1px 4px;border-radius:3px} nav a{margin-right:10px}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for v in row:
            cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{_esc(_fmt(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _img(path: Path, caption: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{_esc(caption or path.stem)}" src="data:image/png;base64,{data}">{cap}</figure>'


def _figures(out: StageOutput) -> str:
    """Every figure a stage recorded (key -> file in its folder), inlined with its caption."""
    res = out.stage_result()
    parts = []
    for key, rel in (res.figures or {}).items():
        p = out.path(rel)
        if p.exists() and p.suffix.lower() == ".png":
            parts.append(_img(p, res.caption(key)))
    return "\n".join(parts)


def _not_measured(out: StageOutput | None, what: str) -> str:
    if out is None:
        return f'<p class="nm">{_esc(what)}: not run (disabled in the spec).</p>'
    return f'<p class="nm">{_esc(what)}: not measured &mdash; {_esc(out.reason)}</p>'


def _model_rows(models: dict, keys: list[tuple[str, str]]) -> str:
    rows = [[name] + [m.get(k, "") if isinstance(m, dict) else "" for k, _ in keys] for name, m in models.items()]
    return _table(["model"] + [label for _, label in keys], rows)


# ----------------------------------------------------------------------------- sections


def _sec_setup(o: dict[str, StageOutput], spec: dict) -> str:
    parts = []
    d = o.get("data")
    models = spec.get("models", {})
    rows = []
    for name, m in models.items():
        tr = o.get(f"train_{name}")
        info = tr.stage_result().numbers if tr is not None and tr.measured else {}
        rows.append([
            name, m.get("arch"), m.get("checkpoint") or m.get("mode"), info.get("eps", m.get("eps") or spec["threat"]["eps"]),
            info.get("epochs", ""), info.get("parameters", ""), info.get("source", "not measured" if tr is not None else ""),
        ])
    parts.append("<h3>Models</h3>" + _table(["model", "arch", "training", "eps", "epochs", "parameters", "source"], rows))
    parts.append(_recipes(o, models))
    parts.append(
        "<h3>Threat model</h3>"
        + _table(["norm", "eps"], [[spec["threat"]["norm"], spec["threat"]["eps"]]])
    )
    if d is not None and d.measured:
        r = d.stage_result().numbers
        parts.append("<h3>Data</h3>")
        srows = [[split, s.get("images"), ", ".join(str(c) for c in s.get("per_class", []))] for split, s in r.get("splits", {}).items()]
        parts.append(
            f"<p>Source <code>{_esc(r.get('source'))}</code>, {_esc(r.get('resolution'))} pixels, {_esc(r.get('channels'))} channels, "
            f"{len(r.get('classes', []))} classes: {_esc(', '.join(r.get('classes', [])))}. "
            f"Options: <code>{_esc(json.dumps(r.get('options', {})))}</code>.</p>"
        )
        parts.append(_table(["split", "images", "per class"], srows))
        parts.append(_world(r.get("world")))
        parts.append(_figures(d))
    else:
        parts.append(_not_measured(d, "data"))
    for name in models:
        tr = o.get(f"train_{name}")
        if tr is not None and tr.measured and tr.stage_result().figures:
            parts.append(f"<h3>Training: {_esc(name)}</h3>" + _figures(tr))
    return "\n".join(parts)


def _recipes(o: dict[str, StageOutput], models: dict) -> str:
    """Each trained model's recipe: augmentation, schedule, lr, batch, attack step, the per-epoch
    check's eps, the epoch kept and any catastrophic overfitting (train stage numbers)."""
    rows, notes = [], []
    for name in models:
        tr = o.get(f"train_{name}")
        info = tr.stage_result().numbers if tr is not None and tr.measured else {}
        c = info.get("config")
        if not c:
            continue
        co = info.get("catastrophic_overfitting") or []
        fallback = info.get("co_fallback")
        rows.append([name, info.get("augmentation", ""), c.get("schedule"), c.get("lr"), c.get("batch_size"),
                     c.get("step_size") if c.get("mode") != "std" else "", c.get("check_eps"),
                     f"{info.get('selected_epoch', '')} of {c.get('epochs')}",
                     (", ".join(map(str, co)) + (f" (PGD from epoch {fallback + 1})" if fallback is not None else "")) if co else "none"])
        notes += [f"{name}: {n}" for n in tr.stage_result().notes or []]
    if not rows:
        return ""
    head = ["model", "augmentation", "schedule", "lr", "batch", "attack step", "check eps", "epoch kept", "catastrophic overfitting"]
    return ("<h3>Training recipes</h3>" + _table(head, rows)
            + "".join(f"<p class='warn'>{_esc(n)}</p>" for n in notes))


def _world(world: dict | None) -> str:
    """The procedural world stated plainly: which cue is the class (predictive), how often the
    others agree with it, and which cues an eps-perturbation can forge (non-robust)."""
    if not world:
        return ""
    eps = world.get("eps")
    rows = []
    for c in world.get("cues", []):
        role = "the class" if c.get("is_class") else f"agrees with the class {100 * c['agreement']:.1f}% of the time"
        kind = ("" if "forgeable_at_eps" not in c else
                "non-robust: below 2 eps, a perturbation can replace it by another class's" if c["forgeable_at_eps"] else "robust at eps")
        rows.append([c["cue"], role, c.get("amplitude"), c.get("amplitude_over_eps", ""), kind])
    head = f"<h3>The world</h3><p>{_esc(world.get('description', ''))}</p>"
    return head + _table(["cue", "role (training split, measured)", "amplitude", f"amplitude / eps ({_fmt(eps)})", "at eps"], rows)


#: the report section each claim is measured in (the claims-at-a-glance table links to it)
CLAIM_SECTION = {
    "clean_tradeoff": "accuracy", "robust_gain": "accuracy", "shape_bias": "bias", "median": "transforms",
    "blur_gap": "transforms", "blur_retention": "transforms", "stylised": "transforms", "silhouettes": "transforms",
    "reversal": "transforms", "filters_smaller": "neurons", "filters_smoother": "neurons", "simpler_neurons": "neurons",
    "saliency_object": "saliency", "sanity_guided": "sanity", "localisation": "localisation", "generation": "generation",
    "fusion": "transfer", "fusion_mixed": "transfer", "robust_dataset": "construct", "nonrobust_dataset": "construct",
    "nonrobust_rand": "construct", "faithful_maps": "faithfulness", "stable_maps": "faithfulness",
}


#: the CSS class of each verdict
VERDICT_CLASS = {"holds": "holds", "does not hold": "fails", "inconclusive": "inconc"}


def _test_text(t: dict) -> str:
    """One comparison as the report prints it: ``what = estimate [lo, hi] (rule; k/n, ...)``."""
    iv = f" [{_fmt(t['interval'][0])}, {_fmt(t['interval'][1])}]" if t.get("interval") else ""
    counts = "; ".join(f"{k} {v}" for k, v in (t.get("counts") or {}).items())
    return f"{t['what']} = {_fmt(t['estimate'])}{iv} (rule {t['rule']}{'; ' + counts if counts else ''}): {t['verdict']}"


def _key_test(c: dict) -> dict | None:
    """The comparison that decides a claim's verdict (the first with the claim's own verdict)."""
    tests = c.get("tests") or []
    return next((t for t in tests if t["verdict"] == c["verdict"]), tests[0] if tests else None)


def _glance(claims: list[dict]) -> str:
    """Every verdict in one compact table, with its key comparison (estimate, 95% interval, rule)
    and a link to the section that measures it."""
    rows = []
    for c in claims:
        cls = VERDICT_CLASS.get(c["verdict"], "notm")
        t = _key_test(c)
        if t is not None:
            iv = f" [{_fmt(t['interval'][0])}, {_fmt(t['interval'][1])}]" if t.get("interval") else " (no interval)"
            key = f"{_esc(t['what'])}: <b>{_esc(_fmt(t['estimate']))}</b>{_esc(iv)}, rule {_esc(t['rule'])}"
        else:
            key = _esc(c.get("note", ""))
        sec = CLAIM_SECTION.get(c["id"], "claims")
        rows.append(f'<tr><td><a href="#{sec}">{_esc(c["id"])}</a></td><td>{_esc(c["claim"])}</td>'
                    f'<td>{key}</td><td class="{cls}">{_esc(c["verdict"])}</td></tr>')
    return ('<h2 id="glance">The claims at a glance</h2><table><tr><th>claim</th><th>statement</th><th>key comparison '
            '(estimate [95% interval], rule)</th><th>verdict</th></tr>' + "\n".join(rows)
            + '</table><p>A verdict is "inconclusive" when the rule\'s threshold lies inside the 95% interval. Every claim\'s '
              'numbers and rule: <a href="#claims">the claims</a>.</p>')


def _validity_warning(results: dict) -> str:
    """The validity gate's warnings, first on the page (an ADV model that is not robust, an STD
    model that is)."""
    warnings = (results.get("validity") or {}).get("warnings") or []
    return "".join(f'<p class="warn"><b>Warning.</b> {_esc(w)}</p>' for w in warnings)


def _sec_robustness(o: dict[str, StageOutput], spec: dict) -> str:
    out = o.get("robustness")
    if out is None or not out.measured:
        return _not_measured(out, "robustness")
    r = out.stage_result().numbers
    rows = []
    for name, m in r.get("models", {}).items():
        aa = m.get("autoattack") or {}
        pgd = m.get("pgd") or {}
        rows.append([
            name, f"{_fmt(m.get('clean_accuracy'))} ({m.get('clean_correct', '?')}/{m.get('n', '?')}) [{_fmt(m.get('clean_interval', ''))}]",
            f"{_fmt(pgd.get('robust_accuracy', m.get('robust_accuracy')))} ({pgd.get('robust', '?')}/{pgd.get('n', '?')})",
            f"{_fmt(m.get('robust_accuracy'))} ({m.get('robust', '?')}/{m.get('robust_n', '?')}) [{_fmt(m.get('robust_interval', ''))}]",
            m.get("robust_attack", ""), _fmt(aa.get("per_attack", aa.get("reason", "not run"))),
        ])
    first = next(iter(r.get("models", {}).values()), {})
    ens = (first.get("autoattack") or {}).get("label", "no ensemble")
    head = (
        f"<p>PGD-{_esc(r.get('pgd', {}).get('steps'))} ({_esc(r.get('pgd', {}).get('restarts'))} restart(s)) on {_esc(r.get('n'))} test images "
        f"(a seeded random sample); then <b>{_esc(ens)}</b> on the images PGD left robust among the first {_esc(r.get('autoattack_n', 0))} "
        f"(as AutoAttack attacks only the points still robust). The <b>headline</b> robust accuracy is the per-image worst case over "
        f"both, and the claims use it; in brackets the 95% Wilson interval. Threat: {_esc(_fmt(r.get('threat', {})))}. "
        f"Reproduce a model's PGD number: <code>{_esc(r.get('reproduce', ''))}</code>.</p>"
    )
    return head + _table(["model", "clean (k/n) [95%]", "PGD robust (k/n)", "headline robust (k/n) [95%]", "headline attacks",
                          "robust after each attack, in sequence"], rows) + _figures(out)


def _sec_generic(stage: str, what: str, keys: list[tuple[str, str]] | None = None) -> Callable:
    def render(o: dict[str, StageOutput], spec: dict) -> str:
        out = o.get(stage)
        if out is None or not out.measured:
            return _not_measured(out, what)
        res: StageResult = out.stage_result()
        parts = []
        if res.summary:
            parts.append(f"<p>{_esc(res.summary)}</p>")
        if keys and isinstance(res.numbers.get("models"), dict):
            parts.append(_model_rows(res.numbers["models"], keys))
        for title, tab in (res.tables or {}).items():
            parts.append(f"<h3>{_esc(title)}</h3>" + _table(tab["header"], tab["rows"]))
        parts.append(_figures(out))
        return "\n".join(parts)

    return render


SECTIONS: list[tuple[str, str, Callable]] = [
    ("setup", "1. Setup and data", _sec_setup),
    ("accuracy", "2. Clean and robust accuracy (STD vs ADV)", _sec_robustness),
    ("saliency", "3. What do they look at? Saliency maps", _sec_generic("saliency", "saliency")),
    ("featvis", "4. Feature visualisation: first-layer filters and deeper channels", _sec_generic("featvis", "feature visualisation")),
    ("sanity", "5. Sanity checks of the saliency methods (App. A)", _sec_generic("sanity", "sanity checks")),
    ("faithfulness", "5b. Do the maps tell the truth? Faithfulness and stability", _sec_generic("faithfulness", "faithfulness")),
    ("transforms", "6. Transformations: blur, median, reversal, stylisation, silhouettes",
     _sec_generic("transforms", "transformations")),
    ("bias", "7. Shape versus texture bias (cue conflict)",
     _sec_generic("bias", "cue-conflict bias", [("shape_bias", "shape bias"), ("texture_bias", "texture bias"), ("colour_bias", "colour bias"), ("n", "conflict images")])),
    ("stimuli", "7b. Geirhos's stimuli: shape bias, silhouettes and edges, beside published models",
     _sec_generic("stimuli", "Geirhos stimulus sets")),
    ("neurons", "8. Neuron analysis (Chen et al.)", _sec_generic("neurons", "neuron analysis")),
    ("localisation", "9. Weak localisation from saliency (Aggarwal et al.)",
     _sec_generic("localisation", "localisation", [("box_accuracy", "IoU >= 0.5"), ("mean_iou", "mean IoU"), ("pointing_accuracy", "pointing game")])),
    ("generation", "10. Generation: large targeted perturbations", _sec_generic("generation", "generation")),
    ("transfer", "11. Transfer: late fusion (Sec. 4.2)", _sec_generic("transfer", "transfer")),
    ("construct", "12. Robust and non-robust data sets (Ilyas et al.)", _sec_generic("construct", "constructed data sets")),
    ("regime", "13. The regime map: texture amplitude / eps x shape agreement", _sec_generic("regime", "regime map")),
]
#: opt-in stages: a section that says "not run" when the spec leaves them off
OPT_IN = ("transfer", "construct", "regime", "stimuli")


def _claims_table(claims: list[dict]) -> str:
    rows = []
    for c in claims:
        cls = VERDICT_CLASS.get(c["verdict"], "notm")
        nums = "<br>".join(f"{_esc(k)}: <b>{_esc(_fmt(v))}</b>" for k, v in c["numbers"].items()) or _esc(c.get("note", "no numbers"))
        if c.get("tests"):
            nums += "<br><i>" + "<br>".join(_esc(_test_text(t)) for t in c["tests"]) + "</i>"
        if c["numbers"] and c.get("note"):  # why numbers carry no verdict (the validity gate, untestable data)
            nums += f"<br><b>{_esc(c['note'])}</b>"
        rows.append(
            f"<tr><td>{_esc(c['paper'])}</td><td>{_esc(c['claim'])}</td><td>{nums}</td>"
            f"<td>{_esc(c['rule'])}</td><td class=\"{cls}\">{_esc(c['verdict'])}</td></tr>"
        )
    counts = {v: sum(c["verdict"] == v for c in claims) for v in ("holds", "does not hold", "inconclusive", "not measured")}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    return (
        f"<p>{summary}. A verdict is computed from the numbers next to it by the rule shown "
        "(<code>robustlens/study/claims.py</code>) on the 95% interval of each comparison (Wilson, Newcombe, or a parametric "
        "bootstrap, as named): \"holds\" needs the whole interval past the threshold, a threshold inside it is \"inconclusive\"; "
        "a claim without numbers is \"not measured\".</p>"
        "<table><tr><th>paper</th><th>claim</th><th>measured</th><th>rule</th><th>verdict</th></tr>"
        + "\n".join(rows) + "</table>"
    )


def render_report(results: dict, outputs: dict[str, StageOutput]) -> str:
    """The report's HTML for ``results`` (results.json content) and the stage outputs."""
    spec = results["config"]
    title = f"robustlens study: {spec['name']}"
    nav = " ".join(f'<a href="#{sid}">{_esc(t.split(" ", 1)[1].split(":")[0])}</a>' for sid, t, _ in SECTIONS) + ' <a href="#claims">claims</a>'
    body = [
        f"<h1>{_esc(title)}</h1>",
        "<p class=\"sub\">What do adversarially robust models look at? Standard (STD) versus adversarially trained (ADV) "
        "classifiers, after Itazuri et al. (2019) and three companion papers. Numbers: <code>results.json</code>.</p>",
        _validity_warning(results),
        f"<nav>{nav}</nav>",
        _glance(results.get("claims", [])),
    ]
    for sid, heading, fn in SECTIONS:
        if sid in OPT_IN and sid not in outputs:
            body.append(f'<h2 id="{sid}">{_esc(heading)}</h2>' + _not_measured(None, sid))
            continue
        try:
            content = fn(outputs, spec)
        except (KeyError, TypeError, ValueError, FileNotFoundError) as e:  # a malformed stage must not hide the rest
            content = f'<p class="nm">{_esc(heading)}: could not render ({_esc(type(e).__name__)}: {_esc(e)})</p>'
        body.append(f'<h2 id="{sid}">{_esc(heading)}</h2>\n{content}')
    body.append('<h2 id="claims">14. The seeds\' claims, measured</h2>' + _claims_table(results.get("claims", [])))
    versions = results.get("versions", {})
    body.append("<h2>Provenance</h2>" + _table(["package", "version"], [[k, v] for k, v in versions.items()]))
    body.append(
        "<h3>Stages</h3>"
        + _table(["stage", "hash", "status"], [[k, v.get("hash", ""), v.get("status", "")] for k, v in results.get("stages", {}).items()])
    )
    body.append("<h3>Spec</h3><pre>" + _esc(json.dumps(spec, indent=2)) + "</pre>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )
