"""The seeds' claims, checked against a study's measured numbers.

Each claim names its paper, states what the paper says, picks the numbers that test it out
of ``results.json``'s ``results`` block, and applies an explicit rule with a threshold. The
verdict is one of ``holds`` / ``does not hold`` / ``not measured``: a claim whose numbers
are missing is "not measured", never guessed, and every verdict is shown with its numbers.

Papers: Itazuri et al. 2019 (main), Chen et al. 2020 (shape reliance, neuron simplicity),
Aggarwal et al. (perceptually aligned gradients, localisation), Ilyas et al. 2019
(robust / non-robust features), plus Tsipras et al. 2019 as cited by the main paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"

MAIN = "Itazuri et al. 2019"
CHEN = "Chen et al. 2020"
AGGARWAL = "Aggarwal et al."
ILYAS = "Ilyas et al. 2019"


class _Missing(Exception):
    pass


def _get(results: dict, *path: Any) -> Any:
    """``results[path[0]][path[1]]...``; raises ``_Missing`` naming the path if absent."""
    cur: Any = results
    for p in path:
        if isinstance(cur, dict) and p in cur and cur[p] is not None:
            cur = cur[p]
        elif isinstance(cur, list) and isinstance(p, int) and -len(cur) <= p < len(cur):
            cur = cur[p]
        else:
            raise _Missing("/".join(str(q) for q in path))
    if isinstance(cur, dict) and cur.get("status") == "not_measured":
        raise _Missing("/".join(str(q) for q in path))
    return cur


@dataclass
class Claim:
    """A claim and the function that measures it: ``check(results) -> (numbers, verdict_bool)``."""

    id: str
    paper: str
    statement: str
    rule: str
    check: Callable[[dict], tuple[dict, bool]]


def _r(x: float) -> float:
    return round(float(x), 4)


# ----------------------------------------------------------------------------- the checks


def _clean_drop(res: dict) -> tuple[dict, bool]:
    s = _get(res, "robustness", "models", "std", "clean_accuracy")
    a = _get(res, "robustness", "models", "adv", "clean_accuracy")
    return {"STD clean": _r(s), "ADV clean": _r(a), "STD - ADV": _r(s - a)}, s - a > 0.01


def _robust_gain(res: dict) -> tuple[dict, bool]:
    s = _get(res, "robustness", "models", "std", "robust_accuracy")
    a = _get(res, "robustness", "models", "adv", "robust_accuracy")
    return {"STD robust": _r(s), "ADV robust": _r(a), "ADV - STD": _r(a - s)}, a - s > 0.10


def _shape_bias(res: dict) -> tuple[dict, bool]:
    s = _get(res, "bias", "models", "std", "shape_bias")
    a = _get(res, "bias", "models", "adv", "shape_bias")
    return {"STD shape bias": _r(s), "ADV shape bias": _r(a), "ADV - STD": _r(a - s)}, a - s >= 0.10


def _single_probe(probe: str, margin: float) -> Callable[[dict], tuple[dict, bool]]:
    def check(res: dict) -> tuple[dict, bool]:
        s = _get(res, "transforms", "models", "std", probe)
        a = _get(res, "transforms", "models", "adv", probe)
        return {f"STD {probe}": _r(s), f"ADV {probe}": _r(a), "ADV - STD": _r(a - s)}, a - s > margin

    return check


def _silhouettes(res: dict) -> tuple[dict, bool]:
    """ADV - STD on silhouettes drawn in the polarity that matches the data's background (white
    shapes on black for a dark background, as in the procedural set; the papers' black on white
    otherwise). Both polarities' numbers are reported when both were evaluated."""
    models = _get(res, "transforms", "models")
    matched = (_get(res, "transforms").get("shape_background") or {}).get("matched_polarity", "dark")
    probe = "silhouette_light" if matched == "light" and "silhouette_light" in models["std"] else "silhouette"
    nums: dict = {}
    for name in ("silhouette", "silhouette_light"):
        if name in models["std"] and name in models["adv"]:
            nums[f"STD {name}"], nums[f"ADV {name}"] = _r(models["std"][name]), _r(models["adv"][name])
    s, a = _get(models, "std", probe), _get(models, "adv", probe)
    nums["polarity used"] = "light (white on black)" if probe == "silhouette_light" else "dark (black on white)"
    nums["ADV - STD"] = _r(a - s)
    return nums, a - s > 0.02


def _curve(res: dict, model: str, probe: str) -> tuple[list, list]:
    c = _get(res, "transforms", "models", model, probe)
    return list(_get(c, "levels")), list(_get(c, "accuracy"))


def _median(res: dict) -> tuple[dict, bool]:
    lv, s = _curve(res, "std", "median")
    _, a = _curve(res, "adv", "median")
    if len(lv) < 2:
        raise _Missing("transforms/median (needs >= 2 levels)")
    g0, gN = a[0] - s[0], a[-1] - s[-1]
    nums = {
        f"STD at {lv[0]}x": _r(s[0]), f"ADV at {lv[0]}x": _r(a[0]),
        f"STD at {lv[-1]}x": _r(s[-1]), f"ADV at {lv[-1]}x": _r(a[-1]),
        "gap ADV-STD first": _r(g0), "gap ADV-STD last": _r(gN),
    }
    return nums, gN > 0 and gN > g0


#: the clean STD - ADV difference the blur curves must keep (below it there is no difference)
BLUR_GAP_MIN = 0.01


def _blur_gap_kept(res: dict) -> tuple[dict, bool]:
    lv, s = _curve(res, "std", "blur")
    _, a = _curve(res, "adv", "blur")
    if len(lv) < 2:
        raise _Missing("transforms/blur (needs >= 2 levels)")
    # Main paper, Sec. 4.1: "In the Gaussian blur setting, the accuracy of both models decreases
    # while maintaining the difference of their accuracy." The difference is the clean one (STD
    # ahead: the trade-off), and it must be kept at every sigma, not only at the two ends (curves
    # that cross in between do not keep it); a tied pair has no difference to keep.
    gaps = [si - ai for si, ai in zip(s, a)]
    g0 = gaps[0]
    drift = max(abs(g - g0) for g in gaps)
    drop_s, drop_a = s[0] - s[-1], a[0] - a[-1]
    nums = {
        f"STD sigma {lv[0]}": _r(s[0]), f"STD sigma {lv[-1]}": _r(s[-1]),
        f"ADV sigma {lv[0]}": _r(a[0]), f"ADV sigma {lv[-1]}": _r(a[-1]),
        "gap STD-ADV first": _r(g0), "gap STD-ADV last": _r(gaps[-1]), "largest change of the gap": _r(drift),
    }
    return nums, drop_s > 0.05 and drop_a > 0.05 and g0 > BLUR_GAP_MIN and drift <= 0.10


def _blur_retention(res: dict) -> tuple[dict, bool]:
    lv, s = _curve(res, "std", "blur")
    _, a = _curve(res, "adv", "blur")
    if len(lv) < 2 or s[0] <= 0 or a[0] <= 0:
        raise _Missing("transforms/blur (needs >= 2 levels and non-zero clean accuracy)")
    rs, ra = s[-1] / s[0], a[-1] / a[0]
    return {f"STD kept at sigma {lv[-1]}": _r(rs), f"ADV kept at sigma {lv[-1]}": _r(ra), "ADV - STD": _r(ra - rs)}, ra - rs > 0.05


def _reversal(res: dict) -> tuple[dict, bool]:
    s0 = _get(res, "transforms", "models", "std", "clean")
    a0 = _get(res, "transforms", "models", "adv", "clean")
    s = _get(res, "transforms", "models", "std", "invert")
    a = _get(res, "transforms", "models", "adv", "invert")
    ds, da = s0 - s, a0 - a
    return {"STD drop": _r(ds), "ADV drop": _r(da), "|difference|": _r(abs(ds - da))}, abs(ds - da) <= 0.10


def _filters_smaller(res: dict) -> tuple[dict, bool]:
    s = _get(res, "neurons", "models", "std", "first_layer_norm")
    a = _get(res, "neurons", "models", "adv", "first_layer_norm")
    return {"STD mean |w|": _r(s), "ADV mean |w|": _r(a), "ADV / STD": _r(a / s if s else float("nan"))}, a < 0.95 * s


def _filters_smoother(res: dict) -> tuple[dict, bool]:
    s = _get(res, "neurons", "models", "std", "first_layer_hf")
    a = _get(res, "neurons", "models", "adv", "first_layer_hf")
    return {"STD high-freq share": _r(s), "ADV high-freq share": _r(a), "ADV - STD": _r(a - s)}, a - s < -0.02


def _simpler_neurons(res: dict) -> tuple[dict, bool]:
    s = _get(res, "neurons", "models", "std", "concepts_per_channel")
    a = _get(res, "neurons", "models", "adv", "concepts_per_channel")
    return {"STD concepts/channel": _r(s), "ADV concepts/channel": _r(a), "ADV - STD": _r(a - s)}, a < 0.95 * s


def _saliency_on_object(res: dict) -> tuple[dict, bool]:
    per = _get(res, "saliency", "object_energy")
    s = _get(per, "std")
    a = _get(per, "adv")
    # A method the stage left out (``object_energy_left_out``: a map exactly zero off the object
    # for every model, e.g. IG whose black baseline equals a black background) never reaches this rule.
    left_out = set(_get(res, "saliency").get("object_energy_left_out") or ())
    methods = sorted((set(s) & set(a)) - left_out)
    if not methods:
        raise _Missing("saliency/object_energy")
    nums = {}
    wins = 0
    for m in methods:
        nums[f"{m}: STD"] = _r(s[m])
        nums[f"{m}: ADV"] = _r(a[m])
        wins += a[m] - s[m] > 0.02
    nums["methods where ADV > STD + 0.02"] = f"{wins}/{len(methods)}"
    return nums, wins * 2 > len(methods)


def _localisation(res: dict) -> tuple[dict, bool]:
    """Aggarwal et al.: "low-perturbation adversarial training improves [...] localization
    performance". ADV must beat STD by > 0.02 with both box thresholds (the result must not
    hang on the threshold) and beat a centred box, which a constant map would give."""
    models = _get(res, "localisation", "models")
    s, a = _get(models, "std", "box_accuracy"), _get(models, "adv", "box_accuracy")
    nums = {"STD IoU>=0.5 (energy)": _r(s), "ADV IoU>=0.5 (energy)": _r(a), "ADV - STD (energy)": _r(a - s)}
    ok = a - s > 0.02
    if "max_threshold" in models["std"] and "max_threshold" in models["adv"]:
        sm, am = _get(models, "std", "max_threshold", "box_accuracy"), _get(models, "adv", "max_threshold", "box_accuracy")
        nums.update({"STD IoU>=0.5 (max)": _r(sm), "ADV IoU>=0.5 (max)": _r(am), "ADV - STD (max)": _r(am - sm)})
        ok = ok and am - sm > 0.02
    centre = _get(res, "localisation").get("centre_box_accuracy")
    if centre is not None:
        nums["centred box"] = _r(centre)
        ok = ok and a > centre
    return nums, ok


def _generation(res: dict) -> tuple[dict, bool]:
    """Aggarwal et al. (after Tsipras et al.): "adding a large targeted adversarial perturbation
    leads to an image resembling the target class". A judge of one kind rewards its own kind's
    perturbations, so a judge of each kind must see ADV's images as the target more often."""
    g = _get(res, "generation")
    judges = [j for j in (g.get("judge"), g.get("judge_adv")) if j]
    if len(judges) < 2:
        raise _Missing("generation/judge_adv (the claim needs a judge of each kind)")
    nums, ok = {}, True
    for j in judges:
        s = _get(g, "models", "std", "judges", j, "agreement")
        a = _get(g, "models", "adv", "judges", j, "agreement")
        nums.update({f"{j}: STD's judged as target": _r(s), f"{j}: ADV's judged as target": _r(a), f"{j}: ADV - STD": _r(a - s)})
        ok = ok and a - s > 0.10
    return nums, ok


def _sanity_guided(res: dict) -> tuple[dict, bool]:
    nums, ok = {}, True
    for model in ("std", "adv"):
        curve = _get(res, "sanity", "curves", model, "guided", "spearman_abs")
        nums[f"{model.upper()} rank corr. after full randomisation"] = _r(curve[-1])
        ok = ok and curve[-1] < 0.5
    return nums, ok


def _fusion_table(res: dict, variants: tuple[str, ...]) -> tuple[list[str], dict]:
    table = _get(res, "transfer", "table")  # {size: {variant: mean test accuracy}}
    sizes = sorted(table, key=lambda s: int(s))
    if len(sizes) < 2:
        raise _Missing("transfer/table (needs >= 2 resolutions)")
    for s in sizes:
        for need in variants:
            if need not in table[s]:
                raise _Missing(f"transfer/table/{s}/{need}")
    return sizes, table


#: accuracy ties within this margin count as "best" (a repeat-to-repeat spread is of this order)
FUSION_TIE = 0.005
#: how far behind the best STD+ADV may be and still be "near the best"
FUSION_NEAR = 0.02


def _fusion(res: dict) -> tuple[dict, bool]:
    sizes, table = _fusion_table(res, ("adv+adv", "std+std"))
    lo, hi = table[sizes[0]], table[sizes[-1]]
    nums = {}
    for s in (sizes[0], sizes[-1]):
        best = max(table[s], key=table[s].get)
        nums[f"best @ {s}px"] = f"{best.upper()} {table[s][best]:.4f}"
        for v in ("std+std", "adv+adv"):
            nums[f"{v.upper()} @ {s}px"] = _r(table[s][v])
    ok = lo["adv+adv"] >= max(lo.values()) - FUSION_TIE and hi["std+std"] >= max(hi.values()) - FUSION_TIE
    return nums, ok


def _fusion_mixed(res: dict) -> tuple[dict, bool]:
    sizes, table = _fusion_table(res, ("std+adv",))
    nums, ok = {}, True
    for s in sizes:
        gap = max(table[s].values()) - table[s]["std+adv"]
        nums[f"STD+ADV @ {s}px"] = _r(table[s]["std+adv"])
        nums[f"gap to best @ {s}px"] = _r(gap)
        ok = ok and gap <= FUSION_NEAR
    return nums, ok


def _robust_dataset(res: dict) -> tuple[dict, bool]:
    """D_R's robust accuracy against the same recipe on the original images (or, without that
    baseline, the STD model), at the study's threat and at every ``eval_threats`` entry; the
    claim holds if D_R is ahead by more than 0.10 at one of these threats, all of which the spec
    declared before the run (a small model can be robust at L2 0.25 and at no L-inf 8/255)."""
    d = _get(res, "construct", "datasets")
    r = _get(d, "robust", "robust_accuracy")
    nums = {"D_R model clean": _r(_get(d, "robust", "clean_accuracy")), "D_R model robust": _r(r)}
    if "original" in d:
        base = _get(d, "original", "robust_accuracy")
        nums["same recipe on the original images: robust"] = _r(base)
    else:
        base = _get(res, "robustness", "models", "std", "robust_accuracy")
        nums["STD model robust (robustness stage)"] = _r(base)
    nums["difference"] = _r(r - base)
    best = r - base
    if "original" in d:
        theirs = {e["threat"]: e["robust_accuracy"] for e in d["original"].get("extra_threats", [])}
        for e in d["robust"].get("extra_threats", []):
            if e["threat"] in theirs:
                diff = e["robust_accuracy"] - theirs[e["threat"]]
                nums[f"{e['threat']}: D_R, original, difference"] = [_r(e["robust_accuracy"]), _r(theirs[e["threat"]]), _r(diff)]
                best = max(best, diff)
    nums["largest difference"] = _r(best)
    return nums, best > 0.10


def _nonrobust(kind: str) -> Callable[[dict], tuple[dict, bool]]:
    def check(res: dict) -> tuple[dict, bool]:
        acc = _get(res, "construct", "datasets", kind, "clean_accuracy")
        chance = _get(res, "construct", "chance")
        name = "D_det" if kind == "det" else "D_rand"
        return {f"{name} model clean (original labels)": _r(acc), "chance": _r(chance), "ratio to chance": _r(acc / chance)}, acc > 2 * chance

    return check


#: ADV's ROAD gap (LeRF - MoRF accuracy) must exceed STD's by more than this, for most methods
FAITHFUL_MARGIN = 0.05
#: ADV's max-sensitivity must be below this share of STD's, for most methods
STABLE_RATIO = 0.9


def _per_method(res: dict, metric: str) -> tuple[list[str], dict, dict]:
    s = _get(res, "faithfulness", "models", "std")
    a = _get(res, "faithfulness", "models", "adv")
    methods = [m for m in s if m in a and metric in s[m] and metric in a[m]]
    if not methods:
        raise _Missing(f"faithfulness/models/*/{metric}")
    return methods, s, a


def _faithful(res: dict) -> tuple[dict, bool]:
    methods, s, a = _per_method(res, "road_gap")
    nums, wins = {}, 0
    for m in methods:
        nums[f"{m}: STD ROAD gap"], nums[f"{m}: ADV ROAD gap"] = _r(s[m]["road_gap"]), _r(a[m]["road_gap"])
        wins += a[m]["road_gap"] - s[m]["road_gap"] > FAITHFUL_MARGIN
    nums[f"methods where ADV > STD + {FAITHFUL_MARGIN}"] = f"{wins}/{len(methods)}"
    return nums, wins * 2 > len(methods)


def _stable(res: dict) -> tuple[dict, bool]:
    methods, s, a = _per_method(res, "max_sensitivity")
    nums, wins = {}, 0
    for m in methods:
        nums[f"{m}: STD max-sensitivity"], nums[f"{m}: ADV max-sensitivity"] = _r(s[m]["max_sensitivity"]), _r(a[m]["max_sensitivity"])
        wins += a[m]["max_sensitivity"] < STABLE_RATIO * s[m]["max_sensitivity"]
    nums[f"methods where ADV < {STABLE_RATIO} x STD"] = f"{wins}/{len(methods)}"
    return nums, wins * 2 > len(methods)


CLAIMS: list[Claim] = [
    Claim("clean_tradeoff", MAIN, "ADV models lose clean accuracy (the robustness-accuracy trade-off, Table 1).",
          "holds if STD clean - ADV clean > 0.01", _clean_drop),
    Claim("robust_gain", MAIN, "ADV training buys robustness: ADV keeps far more accuracy under PGD.",
          "holds if ADV robust - STD robust > 0.10", _robust_gain),
    Claim("shape_bias", CHEN, "ADV models rely more on shape than on texture (cue-conflict shape bias).",
          "holds if ADV shape bias - STD shape bias >= 0.10", _shape_bias),
    Claim("median", MAIN, "Under repeated median filtering ADV outperforms STD, more so as repeats increase (Fig. 7).",
          "holds if ADV - STD > 0 at the most repeats and larger than at the fewest", _median),
    Claim("blur_gap", MAIN, "Under Gaussian blur both models lose accuracy while keeping their difference (Fig. 5).",
          f"holds if both drop by > 0.05 over the sigma grid, STD is ahead by > {BLUR_GAP_MIN} without blur, and the STD-ADV gap "
          "stays within 0.10 of that at every sigma", _blur_gap_kept),
    Claim("blur_retention", MAIN, "ADV keeps a larger share of its accuracy at large blur (it looks at a larger scale).",
          "holds if ADV acc(max sigma)/acc(0) - STD's ratio > 0.05", _blur_retention),
    Claim("stylised", MAIN, "ADV is more accurate than STD on stylised images (texture replaced, shape kept; Table 2).",
          "holds if ADV - STD accuracy on stylised images > 0.02", _single_probe("stylize", 0.02)),
    Claim("silhouettes", CHEN, "ADV is more accurate than STD on texture-less silhouettes.",
          "holds if ADV - STD accuracy on silhouettes > 0.02, drawn in the polarity that matches the data's background "
          "(white on black for a dark background)", _silhouettes),
    Claim("reversal", MAIN, "Colour reversal costs both models about the same accuracy (Table 2).",
          "holds if the two accuracy drops differ by <= 0.10", _reversal),
    Claim("filters_smaller", MAIN, "ADV first-layer filters have smaller values (insensitive to weak edges; Fig. 4).",
          "holds if ADV's mean |weight| of the first convolution is below 0.95 x STD's", _filters_smaller),
    Claim("filters_smoother", CHEN, "ADV first-layer filters detect smoother patterns.",
          "holds if ADV's share of high-frequency filter energy is smaller by > 0.02", _filters_smoother),
    Claim("simpler_neurons", CHEN, "ADV channels are simpler: each responds to fewer concepts.",
          "holds if ADV's mean number of concepts per channel is below 0.95 x STD's", _simpler_neurons),
    Claim("saliency_object", MAIN, "ADV saliency maps are sharper and aligned with the object, not fine texture (Fig. 2).",
          "share of |saliency| inside the object mask; holds if ADV > STD + 0.02 for most methods (a method whose map is "
          "exactly zero off the object for every model, e.g. IG with a black baseline on a black background, is left out)", _saliency_on_object),
    Claim("sanity_guided", MAIN, "Guided backprop depends on the model parameters (App. A, against Adebayo et al.).",
          "holds if the rank correlation with the original map falls below 0.5 after cascading randomisation of every layer, for STD and ADV",
          _sanity_guided),
    Claim("faithful_maps", AGGARWAL, "ADV saliency maps are more faithful than STD maps: removing what they highlight (ROAD) hurts the decision more than removing the rest.",
          f"ROAD gap = mean LeRF accuracy - mean MoRF accuracy (noisy linear imputation); holds if ADV's gap exceeds STD's by > {FAITHFUL_MARGIN} "
          "for most methods of stages.faithfulness", _faithful),
    Claim("stable_maps", AGGARWAL, "ADV saliency maps are more stable than STD maps under a tiny input change (max-sensitivity, Yeh et al. 2019).",
          f"holds if ADV's mean max-sensitivity is below {STABLE_RATIO} x STD's for most methods of stages.faithfulness", _stable),
    Claim("localisation", AGGARWAL, "Saliency of (low-eps) ADV models localises objects better (weak localisation).",
          "holds if ADV box accuracy (IoU >= 0.5) - STD's > 0.02 with both the energy (50 %) and the max (15 %) threshold, "
          "and ADV's is above a centred box's (what a constant map gives)", _localisation),
    Claim("generation", AGGARWAL, "Large targeted perturbations of ADV models turn images into the target class (perceptually aligned gradients).",
          "holds if independent judges of both kinds (an STD and an ADV model, another seed) each assign ADV's generated images "
          "to the target more than 0.10 more often than STD's",
          _generation),
    Claim("fusion", MAIN, "Late fusion: ADV+ADV is the best variant at low resolution, STD+STD at high resolution (Fig. 9).",
          f"holds if ADV+ADV is within {FUSION_TIE} of the best variant at the lowest size and STD+STD within {FUSION_TIE} "
          "of the best at the highest (mean test accuracy over repeats)", _fusion),
    Claim("fusion_mixed", MAIN, "Late fusion: STD+ADV is close to the best variant at every resolution (Fig. 9).",
          f"holds if STD+ADV is within {FUSION_NEAR} of the best variant at every size", _fusion_mixed),
    Claim("robust_dataset", ILYAS, "A standard model trained on the robust data set D_R is itself robust.",
          "holds if its PGD accuracy on the original test set exceeds that of the same recipe trained on the original images "
          "(or, without that baseline, the STD model's) by > 0.10, at the study's threat or at one of the construct stage's "
          "eval_threats", _robust_dataset),
    Claim("nonrobust_dataset", ILYAS, "A model trained on the relabelled non-robust set D_det generalises to the original test labels.",
          "holds if its clean accuracy on the original test set > 2 x chance", _nonrobust("det")),
    Claim("nonrobust_rand", ILYAS, "A model trained on the relabelled non-robust set D_rand generalises to the original test labels.",
          "holds if its clean accuracy on the original test set > 2 x chance", _nonrobust("rand")),
]


def evaluate_claims(results: dict) -> list[dict]:
    """Every claim with its numbers and verdict (``results`` = results.json's ``results``)."""
    out = []
    for c in CLAIMS:
        try:
            numbers, ok = c.check(results)
            verdict = HOLDS if ok else FAILS
            missing = ""
        except _Missing as e:
            numbers, verdict, missing = {}, NOT_MEASURED, f"missing: {e}"
        except (ZeroDivisionError, TypeError, KeyError, IndexError, ValueError) as e:
            numbers, verdict, missing = {}, NOT_MEASURED, f"could not compute: {e}"
        entry = {"id": c.id, "paper": c.paper, "claim": c.statement, "rule": c.rule, "numbers": numbers, "verdict": verdict}
        if missing:
            entry["note"] = missing
        out.append(entry)
    return out
