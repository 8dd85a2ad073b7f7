"""The ``regime`` stage (opt-in): a map of the worlds in which the seeds' mechanism holds.

The seeds explain the trade-off and the shape bias by two conditions on the data: robust
features are less predictive than non-robust ones (Tsipras et al. 2019, as cited by the main
paper), and the non-robust features are predictive yet brittle (Ilyas et al. 2019). In the
procedural set both are knobs: the class is the texture, whose amplitude (in units of the
study's L-inf eps) decides whether an eps-perturbation can forge it, and the shape agrees with
the class a given share of the time (its reliability). Over a grid of the two, this stage
trains a small STD and a small ADV (FGSM-RS) model per cell on a subset, measures clean and
PGD accuracy and cue-conflict shape bias, and judges in each cell the claims that these
numbers decide (``clean_tradeoff``, ``robust_gain``, ``shape_bias``), by the very rules of
:mod:`robustlens.study.claims`.

Each cell's models and numbers are kept in the stage's work folder, so a killed run resumes
at the cell it was in.
"""

from __future__ import annotations

import dataclasses
import json

from robustlens.study.result import StageResult
from robustlens.study.runner import NotMeasured, StageContext
from robustlens.study.spec import Spec, parse_eps
from robustlens.study.stages.context import device, spec_of, stage_seed

NAME = "regime"
#: the claims a cell's numbers decide (their rules are those of study/claims.py)
CELL_CLAIMS = ("clean_tradeoff", "robust_gain", "shape_bias")
MODES = {"std": "std", "adv": "fgsm-rs"}


def params(spec: Spec) -> dict:
    return {**dataclasses.asdict(spec.stages.regime), "data": dataclasses.asdict(spec.data),
            "threat": dataclasses.asdict(spec.threat), "seed": spec.seed}


def deps(spec: Spec) -> tuple[str, ...]:
    return ()


def cell_options(base: dict, amplitude: float, agreement: float, eps: float, p: dict) -> dict:
    """The generator options of one cell: the class is the texture, of amplitude
    ``amplitude`` x eps; the shape agrees with the class a share ``agreement`` of the time
    (it copies the class with probability (agreement - 0.1) / 0.9, is uniform otherwise)."""
    opts = {k: v for k, v in base.items() if k not in ("texture_corr",)}
    opts.update(label="texture", contrast=round(amplitude * eps, 6), shape_corr=round((agreement - 0.1) / 0.9, 6),
                n_train=p["n_train"], n_test=p["n_test"], n_conflict=p["n_test"])
    return opts


def run(ctx: StageContext) -> StageResult:
    """Train STD and ADV in every cell of the grid (amplitude / eps x shape agreement)."""
    spec = spec_of(ctx)
    p = ctx.params
    if not (spec.data.source == "trifeature" or spec.data.source.startswith("trifeature:")):
        raise NotMeasured("the regime map re-renders the procedural set: it needs data.source = trifeature")
    eps = parse_eps(spec.threat.eps)
    cells = []
    grid = [(a, g) for g in p["agreements"] for a in p["amplitudes"]]
    for i, (a, g) in enumerate(grid):
        ctx.log(f"regime: cell {i + 1}/{len(grid)}: texture amplitude {a:g} eps, shape agrees {100 * g:g}%")
        cells.append(_cell(ctx, i, a, g, eps))
    figure = _plot(cells, p, ctx.out / "regime.png")
    held = {c: sum(cell["claims"][c] == "holds" for cell in cells) for c in CELL_CLAIMS}
    summary = (f"{len(p['amplitudes'])} x {len(p['agreements'])} worlds: the class is the texture (amplitude in units of "
               f"eps = {eps:.4g}); the shape agrees with it the given share of the time. Small CNNs (width {p['width']}, "
               f"{p['epochs']} epochs on {p['n_train']} images), PGD-{p['attack_steps']} and shape bias on {p['n_test']}. "
               "Cells where each claim holds: " + ", ".join(f"{c} {n}/{len(cells)}" for c, n in held.items()) + ".")
    rows = [[c["amplitude"], c["agreement"], c["std"]["clean"], c["adv"]["clean"], c["std"]["robust"], c["adv"]["robust"],
             c["std"]["shape_bias"], c["adv"]["shape_bias"]] + [c["claims"][k] for k in CELL_CLAIMS] for c in cells]
    header = ["amplitude / eps", "shape agreement", "STD clean", "ADV clean", "STD robust", "ADV robust",
              "STD shape bias", "ADV shape bias", *CELL_CLAIMS]
    return StageResult({"eps": eps, "cells": cells, "claims_held": held}, figures={"regime": figure}, summary=summary,
                       tables={"regime map": {"header": header, "rows": rows}},
                       captions={"regime": "The regime map: each panel one number over texture amplitude / eps (x) and "
                                           "shape agreement (y); the last panels mark where each claim holds."})


def _cell(ctx: StageContext, index: int, amplitude: float, agreement: float, eps: float) -> dict:
    """One cell's numbers, from its work folder when an earlier (killed) run finished it."""
    from robustlens.data import load
    from robustlens.study.claims import evaluate_claims

    done = ctx.work / f"cell{index}" / "cell.json"
    if done.exists():
        return json.loads(done.read_text())
    spec = spec_of(ctx)
    p = ctx.params
    opts = cell_options(spec.data.options, amplitude, agreement, eps, p)
    data = {s: load(spec.data.source, split=s, size=spec.data.size or None, **opts) for s in ("train", "test", "conflict")}
    cell = {"amplitude": amplitude, "agreement": agreement, "options": opts}
    for kind, mode in MODES.items():
        cell[kind] = _model_numbers(ctx, index, kind, mode, data, eps)
    res = {"robustness": {"models": {k: {"clean_accuracy": cell[k]["clean"], "robust_accuracy": cell[k]["robust"]} for k in MODES}},
           "bias": {"models": {k: {"shape_bias": cell[k]["shape_bias"]} for k in MODES}}}
    cell["claims"] = {c["id"]: c["verdict"] for c in evaluate_claims(res) if c["id"] in CELL_CLAIMS}
    from robustlens.io import write_json_atomic

    write_json_atomic(done, cell)
    return cell


def _model_numbers(ctx: StageContext, index: int, kind: str, mode: str, data: dict, eps: float) -> dict:
    """Train one small model of a cell (resumable) and measure clean / PGD accuracy and shape bias."""
    import torch

    from robustlens.attacks.evaluate import robust_accuracy
    from robustlens.models import create
    from robustlens.probes.bias import model_bias
    from robustlens.threat import make_threat
    from robustlens.train import TrainConfig, train

    p = ctx.params
    seed = stage_seed(ctx, "regime") + index
    work = ctx.work / f"cell{index}" / kind
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = create("small_cnn", num_classes=data["train"].num_classes, width=p["width"])
    # no per-epoch PGD check (the cell's own PGD evaluation measures robustness, at a third of the cost)
    cfg = TrainConfig(mode=mode, eps=eps if mode != "std" else None, epochs=p["epochs"], seed=seed, progress=False, check_size=0)
    train(model, data["train"], cfg, out_dir=work, resume=(work / "state.safetensors").exists(), device=device(ctx))
    model.eval()
    threat = make_threat("linf", eps)
    r = robust_accuracy(model, data["test"], threat, attack="pgd", steps=p["attack_steps"], device=device(ctx),
                        seed=seed, progress=False)
    bias = model_bias(model, data["conflict"], device=device(ctx))
    return {"clean": r["clean_accuracy"], "robust": r["robust_accuracy"], "shape_bias": bias["shape_bias"]}


def _plot(cells: list[dict], p: dict, path) -> str:
    """Heat maps over the grid: clean and robust accuracy per kind, the trade-off, the
    shape-bias gap, and where each claim holds."""
    import numpy as np

    amps, agrees = p["amplitudes"], p["agreements"]

    def grid(f) -> np.ndarray:
        out = np.full((len(agrees), len(amps)), np.nan)
        for c in cells:
            out[agrees.index(c["agreement"]), amps.index(c["amplitude"])] = f(c)
        return out

    panels = {
        "STD clean": grid(lambda c: c["std"]["clean"]), "ADV clean": grid(lambda c: c["adv"]["clean"]),
        "STD robust (PGD)": grid(lambda c: c["std"]["robust"]), "ADV robust (PGD)": grid(lambda c: c["adv"]["robust"]),
        "STD clean - ADV clean": grid(lambda c: c["std"]["clean"] - c["adv"]["clean"]),
        "shape bias ADV - STD": grid(lambda c: c["adv"]["shape_bias"] - c["std"]["shape_bias"]),
    }
    for claim in CELL_CLAIMS:
        panels[f"{claim} holds"] = grid(lambda c, k=claim: float(c["claims"][k] == "holds"))
    return _heat_maps(panels, [f"{a:g}" for a in amps], [f"{g:g}" for g in agrees], path).name


def _heat_maps(panels: dict, xticks: list[str], yticks: list[str], path):
    """One annotated heat map per panel (x: amplitude / eps, y: shape agreement), written
    through :func:`robustlens.plot.save_figure`."""
    import numpy as np

    from robustlens.plot import pyplot, save_figure

    plt = pyplot()
    ncol = 3
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.9 * nrow), squeeze=False)
    for ax, (title, z) in zip(axes.flat, panels.items()):
        signed = "-" in title
        lim = max(0.05, float(np.nanmax(np.abs(z)))) if signed else 1.0
        im = ax.imshow(z, origin="lower", cmap="RdBu" if signed else "viridis", vmin=-lim if signed else 0.0, vmax=lim)
        for (r, c), v in np.ndenumerate(z):
            ax.text(c, r, "" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if signed or v > 0.5 else "white")
        ax.set_xticks(range(len(xticks)), xticks)
        ax.set_yticks(range(len(yticks)), yticks)
        ax.set(title=title, xlabel="texture amplitude / eps", ylabel="shape agreement")
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return save_figure(fig, path, tight_layout=True)
