"""The ``generation`` stage: large-eps targeted L2 PGD towards another class and the share an
independent judge assigns to the target (perceptually aligned gradients; Santurkar et al.
2019, Aggarwal et al.), through :func:`robustlens.explain.generate.generate`."""

from __future__ import annotations

import dataclasses

from robustlens.study.result import StageResult
from robustlens.study.runner import NotMeasured, StageContext
from robustlens.study.spec import Spec
from robustlens.study.stages.context import device, eval_subset, load_model

NAME = "generation"


def params(spec: Spec) -> dict:
    return {**dataclasses.asdict(spec.stages.generation), "seed": spec.seed}


def deps(spec: Spec) -> tuple[str, ...]:
    judge = spec.stages.generation.judge
    return tuple(dict.fromkeys(("data", "train_std", "train_adv") + ((f"train_{judge}",) if judge else ())))


def run(ctx: StageContext) -> StageResult:
    """Large-eps targeted L2 PGD towards each class; the share an independent judge assigns to
    the target (perceptually aligned gradients; Santurkar et al. 2019, Aggarwal et al.)."""
    import torch

    from robustlens.explain.generate import generate
    from robustlens.explain.render import image_grid

    p = ctx.params
    if not p["judge"]:
        raise NotMeasured("generation needs an independent judge model: set stages.generation.judge to a model of [models]")
    judge = load_model(ctx, p["judge"])
    sub = eval_subset(ctx.shared, p["n"])
    k = sub.num_classes
    targets = (sub.labels + 1 + torch.arange(len(sub)) % max(1, k - 1)) % k
    dev = device(ctx)
    out, figures = {}, {}
    for n in ("std", "adv"):
        m = load_model(ctx, n)
        x = generate(m, sub.float(device=dev), targets.to(dev), eps=p["eps"] if p["eps"] > 0 else None, steps=p["steps"])
        with torch.no_grad():
            self_hit = float((m(x).argmax(1).cpu() == targets).float().mean())
            judge_hit = float((judge(x).argmax(1).cpu() == targets).float().mean())
            judge_start = float((judge(sub.float(device=dev)).argmax(1).cpu() == targets).float().mean())
        out[n] = {"target_success": self_hit, "judge_agreement": judge_hit, "judge_start_rate": judge_start}
        f = f"generated_{n}.png"
        image_grid(x[:16].cpu(), ctx.out / f, ncol=8, labels=[sub.classes[int(t)] for t in targets[:16]], title=f"{n}: targeted L2 eps={p['eps']}")
        figures[f"generated_{n}"] = f
    rows = [[n, o["target_success"], o["judge_agreement"], o["judge_start_rate"]] for n, o in out.items()]
    summary = (f"Targeted L2 PGD (eps {p['eps'] if p['eps'] > 0 else 'module default'}, {p['steps']} steps) from test images "
               f"towards another class; the judge ({p['judge']}, trained independently) classifies the results.")
    tables = {"generation": {"header": ["generator", "own model hits target", "judge says target", "judge before"], "rows": rows}}
    return StageResult({"n": len(sub), "eps": p["eps"], "steps": p["steps"], "judge": p["judge"], "models": out},
                       figures=figures, summary=summary, tables=tables, order=("notes", "figures", "summary", "tables", "captions"))
