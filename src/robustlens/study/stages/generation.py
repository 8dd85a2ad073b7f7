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
    g = spec.stages.generation
    return tuple(dict.fromkeys(("data", "train_std", "train_adv") + tuple(f"train_{j}" for j in (g.judge, g.judge_adv) if j)))


def run(ctx: StageContext) -> StageResult:
    """Large-eps targeted L2 PGD towards each class; the share that independent judges assign
    to the target (perceptually aligned gradients; Santurkar et al. 2019, Aggarwal et al.).

    Aggarwal et al. (after Tsipras et al.): "adding a large targeted adversarial perturbation
    leads to an image resembling the target class". Without a human to say what resembles the
    class, a model judges; but a judge of one kind shares its kind's features, so an STD judge
    is moved by what STD models generate (non-robust patterns) and an ADV judge by ADV's. The
    stage therefore asks a judge of each kind (``judge``: STD, ``judge_adv``: ADV, both trained
    independently, another seed), and the claim needs ADV ahead by both."""
    import torch

    from robustlens.explain.generate import generate

    p = ctx.params
    if not p["judge"]:
        raise NotMeasured("generation needs an independent judge model: set stages.generation.judge to a model of [models]")
    judges = {j: load_model(ctx, j) for j in (p["judge"], p.get("judge_adv", "")) if j}
    sub = eval_subset(ctx.shared, p["n"])
    k = sub.num_classes
    targets = (sub.labels + 1 + torch.arange(len(sub)) % max(1, k - 1)) % k
    dev = device(ctx)
    x0 = sub.float(device=dev)
    out, figures = {}, {}
    for n in ("std", "adv"):
        m = load_model(ctx, n)
        x = generate(m, x0, targets.to(dev), eps=p["eps"] if p["eps"] > 0 else None, steps=p["steps"], progress=True)
        with torch.no_grad():
            hit = lambda net, imgs: float((net(imgs).argmax(1).cpu() == targets).float().mean())  # noqa: E731
            per = {j: {"agreement": hit(jm, x), "start_rate": hit(jm, x0)} for j, jm in judges.items()}
            out[n] = {"target_success": hit(m, x), "judge_agreement": per[p["judge"]]["agreement"],
                      "judge_start_rate": per[p["judge"]]["start_rate"], "judges": per}
        figures[f"generated_{n}"] = _grid(ctx, x, sub, targets, n, p["eps"])
    return _result(p, sub, out, figures, list(judges))


def _grid(ctx: StageContext, x, sub, targets, name: str, eps: float) -> str:
    from robustlens.explain.render import image_grid

    f = f"generated_{name}.png"
    image_grid(x[:16].cpu(), ctx.out / f, ncol=8, labels=[sub.classes[int(t)] for t in targets[:16]], title=f"{name}: targeted L2 eps={eps}")
    return f


def _result(p: dict, sub, out: dict, figures: dict, judges: list[str]) -> StageResult:
    rows = [[n, o["target_success"]] + [o["judges"][j]["agreement"] for j in judges] + [o["judge_start_rate"]]
            for n, o in out.items()]
    summary = (f"Targeted L2 PGD (eps {p['eps'] if p['eps'] > 0 else 'module default'}, {p['steps']} steps) from test images "
               f"towards another class; independently trained judges ({', '.join(judges)}) classify the results. A judge of "
               "one kind shares its kind's features, so the claim asks a judge of each kind.")
    header = ["generator", "own model hits target"] + [f"judge {j} says target" for j in judges] + [f"{p['judge']} before"]
    tables = {"generation": {"header": header, "rows": rows}}
    return StageResult({"n": len(sub), "eps": p["eps"], "steps": p["steps"], "judge": p["judge"],
                        "judge_adv": p.get("judge_adv", ""), "models": out},
                       figures=figures, summary=summary, tables=tables, order=("notes", "figures", "summary", "tables", "captions"))
