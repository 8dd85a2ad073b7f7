"""The seeds' claims, checked against a study's measured numbers, with their uncertainty.

Each claim names its paper, states what the paper says, picks the numbers that test it out
of ``results.json``'s ``results`` block, and applies an explicit rule with a threshold. The
verdict is one of ``holds`` / ``does not hold`` / ``inconclusive`` / ``not measured``:

* every comparison of the rule is a :class:`Compare` of an estimate with its threshold, with the
  counts behind it (k of n) and a 95% interval: Wilson's score interval for one proportion;
  Newcombe's hybrid score interval for a difference of two proportions (Newcombe 1998, method
  10), in its paired form where the study stored the 2 x 2 table of the same images (Newcombe
  1998b, method 10: the robustness stage), and in its independent form otherwise (conservative
  for two models scored on the same images, whose successes are positively correlated); a
  parametric bootstrap (independent binomials, seeded) for other functions of proportions;
* a comparison holds when its whole interval is past the threshold, does not hold when its whole
  interval is on the other side, and is inconclusive when the threshold lies inside the interval
  or the estimate equals the threshold to within floating point (:data:`FLOAT_TOL`); a number
  with no sampling interval (a property of the weights, a mean whose per-image values the study
  does not keep) is compared as it is, the floating-point boundary still inconclusive;
* a rule of several comparisons combines them with three-valued logic (:class:`AllOf`,
  :class:`AnyOf`, :class:`Majority`);
* a claim whose numbers are missing is "not measured", never guessed;
* the validity gate (:func:`validity_gate`) runs first: if the ADV model's headline robust
  accuracy is not clearly above the STD model's and above chance, every claim that compares STD
  with ADV is "not measured: the ADV model is not robust (x vs y)".

Papers: Itazuri et al. 2019 (main), Chen et al. 2020 (shape reliance, neuron simplicity),
Aggarwal et al. (perceptually aligned gradients, localisation), Ilyas et al. 2019
(robust / non-robust features), plus Tsipras et al. 2019 as cited by the main paper.
Intervals: Wilson 1927; Newcombe, Stat. Med. 17 (1998) 873-890 and 2635-2650.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED = "holds", "does not hold", "inconclusive", "not measured"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED)

MAIN = "Itazuri et al. 2019"
CHEN = "Chen et al. 2020"
AGGARWAL = "Aggarwal et al."
ILYAS = "Ilyas et al. 2019"

#: the normal quantile of the 95% intervals
Z95 = 1.959963984540054
#: an estimate this close to its threshold (relative to max(1, |threshold|)) is on the boundary
FLOAT_TOL = 1e-9
#: parametric bootstrap draws (seeded: the same results give the same interval)
BOOT_REPS = 4000


class _Missing(Exception):
    pass


class _Untestable(Exception):
    """The data cannot test the claim: a floor of the rule that no outcome could beat (the
    claim is then "not measured", its numbers kept, never "does not hold")."""

    def __init__(self, reason: str, numbers: dict) -> None:
        super().__init__(reason)
        self.reason, self.numbers = reason, numbers


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


# ----------------------------------------------------------------------------- intervals


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for the proportion ``k / n`` (Wilson 1927)."""
    if n <= 0:
        raise ValueError("wilson: n must be positive")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``k1/n1 - k2/n2``, independent samples (1998, method 10)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def newcombe_paired(both: int, first_only: int, second_only: int, neither: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's interval for ``p1 - p2`` on the same items (1998b, method 10): ``p1 = (both +
    first_only) / n``, ``p2 = (both + second_only) / n``, with the correlation phi of the 2 x 2
    table correcting the independent form (phi = 0 when a margin is empty)."""
    e, f, g, h = both, first_only, second_only, neither
    n = e + f + g + h
    p1, p2 = (e + f) / n, (e + g) / n
    l1, u1 = wilson(e + f, n, z)
    l2, u2 = wilson(e + g, n, z)
    den = (e + f) * (g + h) * (e + g) * (f + h)
    phi = (e * h - f * g) / math.sqrt(den) if den > 0 else 0.0
    dl = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    du = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    return p1 - p2 - math.sqrt(max(dl, 0.0)), p1 - p2 + math.sqrt(max(du, 0.0))


def bootstrap(stat: Callable[..., Any], counts: Sequence[tuple[int, int]], reps: int = BOOT_REPS, seed: int = 0) -> tuple[float, float]:
    """Parametric bootstrap 95% interval of ``stat(p_1, ..., p_m)`` (numpy arrays of ``reps``
    draws), each ``p_i = Binomial(n_i, k_i / n_i) / n_i`` drawn independently (percentiles)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    draws = [rng.binomial(n, k / n, size=reps) / n for k, n in counts]
    vals = np.asarray(stat(*draws), dtype=float)
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------- three-valued tests


def _on_boundary(x: float, threshold: float) -> bool:
    return abs(x - threshold) <= FLOAT_TOL * max(1.0, abs(threshold))


@dataclass(frozen=True)
class Compare:
    """``estimate op threshold`` (op: ``>``, ``>=``, ``<``, ``<=``), judged on ``interval`` (95%,
    ``method``) when there is one; ``counts``: the k of n behind each proportion."""

    what: str
    estimate: float
    op: str
    threshold: float
    interval: tuple[float, float] | None = None
    method: str = ""
    counts: dict[str, str] = field(default_factory=dict)

    def verdict(self) -> str:
        """Holds when the whole interval is past the threshold, does not hold when it is wholly on
        the other side, else (the threshold inside it, or on its edge to within :data:`FLOAT_TOL`)
        inconclusive. Without an interval the estimate alone is compared, the boundary inconclusive."""
        t, tol = self.threshold, FLOAT_TOL * max(1.0, abs(self.threshold))
        if math.isnan(self.estimate) or _on_boundary(self.estimate, t):
            return INCONCLUSIVE
        lo, hi = self.interval if self.interval is not None else (self.estimate, self.estimate)
        if self.op in ("<", "<="):  # mirror: x < t  <=>  -x > -t
            lo, hi, t = -hi, -lo, -t
        if lo > t + tol:
            return HOLDS
        if hi < t - tol:
            return FAILS
        return INCONCLUSIVE

    def leaves(self) -> list[Compare]:
        return [self]

    def to_dict(self) -> dict:
        out = {"what": self.what, "estimate": _r(self.estimate), "rule": f"{self.op} {_r(self.threshold)}", "verdict": self.verdict()}
        if self.interval is not None:
            out["interval"] = [_r(self.interval[0]), _r(self.interval[1])]
            out["method"] = self.method
        else:
            out["method"] = self.method or "no sampling interval"
        if self.counts:
            out["counts"] = dict(self.counts)
        return out


@dataclass(frozen=True)
class AllOf:
    """Every part holds (one not holding decides; else one inconclusive makes it inconclusive)."""

    parts: tuple

    def verdict(self) -> str:
        vs = [p.verdict() for p in self.parts]
        return FAILS if FAILS in vs else INCONCLUSIVE if INCONCLUSIVE in vs else HOLDS

    def leaves(self) -> list[Compare]:
        return [leaf for p in self.parts for leaf in p.leaves()]


@dataclass(frozen=True)
class AnyOf:
    """One part holds (one holding decides; else one inconclusive makes it inconclusive)."""

    parts: tuple

    def verdict(self) -> str:
        vs = [p.verdict() for p in self.parts]
        return HOLDS if HOLDS in vs else INCONCLUSIVE if INCONCLUSIVE in vs else FAILS

    def leaves(self) -> list[Compare]:
        return [leaf for p in self.parts for leaf in p.leaves()]


@dataclass(frozen=True)
class Majority:
    """More than half of the parts hold: holds if the parts that hold are a majority, does not
    hold if even counting every inconclusive one they would not be, else inconclusive."""

    parts: tuple

    def verdict(self) -> str:
        vs = [p.verdict() for p in self.parts]
        sure, maybe = vs.count(HOLDS), vs.count(HOLDS) + vs.count(INCONCLUSIVE)
        return HOLDS if 2 * sure > len(vs) else FAILS if 2 * maybe <= len(vs) else INCONCLUSIVE

    def tally(self) -> str:
        vs = [p.verdict() for p in self.parts]
        return f"{vs.count(HOLDS)}/{len(vs)}" + (f" (+{vs.count(INCONCLUSIVE)} inconclusive)" if INCONCLUSIVE in vs else "")

    def leaves(self) -> list[Compare]:
        return [leaf for p in self.parts for leaf in p.leaves()]


def _count(value: float, n: Any) -> tuple[int, int] | None:
    """(k, n) when ``value`` is a proportion k / n of ``n`` items (to float32 precision), else None."""
    if not isinstance(n, (int, float)) or int(n) <= 0 or isinstance(value, bool):
        return None
    k = round(float(value) * int(n))
    return (k, int(n)) if abs(float(value) * int(n) - k) < 1e-3 and 0 <= k <= int(n) else None


def _kn(c: tuple[int, int] | None) -> str:
    return f"{c[0]}/{c[1]}" if c else "n/a"


def diff_test(what: str, a: float, b: float, n_a: Any, n_b: Any, op: str, threshold: float, labels: tuple[str, str]) -> Compare:
    """``a - b op threshold`` for two proportions of ``n_a`` and ``n_b`` items: Newcombe's
    independent interval (no interval when a count is unknown)."""
    ca, cb = _count(a, n_a), _count(b, n_b)
    counts = {labels[0]: _kn(ca), labels[1]: _kn(cb)}
    if ca and cb:
        return Compare(what, a - b, op, threshold, newcombe(*ca, *cb), "Newcombe hybrid score (independent), 95%", counts)
    return Compare(what, a - b, op, threshold, None, "no counts: compared as measured", counts)


def boot_test(what: str, stat: Callable[..., Any], values: Sequence[float], ns: Sequence[Any], op: str, threshold: float,
              labels: Sequence[str]) -> Compare:
    """``stat(values) op threshold`` with a parametric bootstrap interval over the proportions."""
    cs = [_count(v, n) for v, n in zip(values, ns)]
    counts = {lab: _kn(c) for lab, c in zip(labels, cs)}
    est = float(stat(*[float(v) for v in values]))
    if all(cs):
        return Compare(what, est, op, threshold, bootstrap(stat, cs), f"parametric bootstrap ({BOOT_REPS} draws), 95%", counts)
    return Compare(what, est, op, threshold, None, "no counts: compared as measured", counts)


def point_test(what: str, estimate: float, op: str, threshold: float, why: str) -> Compare:
    """A comparison without a sampling interval (``why`` says why there is none)."""
    return Compare(what, float(estimate), op, float(threshold), None, why)


#: the reason the weight-based claims carry no sampling interval
WEIGHTS = "a property of the trained weights (one training seed): no sampling interval over images"
#: the reason the per-method map claims carry none
NO_PER_IMAGE = "a mean over images whose per-image values the stage does not keep: no interval"


@dataclass
class Claim:
    """A claim and the function that measures it: ``check(results) -> (numbers, test)``, the test
    a :class:`Compare` (or a combination of them) whose ``verdict()`` is the claim's;
    ``compares_models``: a claim about STD against ADV, which the validity gate guards."""

    id: str
    paper: str
    statement: str
    rule: str
    check: Callable[[dict], tuple[dict, Any]]
    compares_models: bool = True


def _r(x: float) -> float:
    return round(float(x), 4)


# ----------------------------------------------------------------------------- the checks


def _rob(res: dict, model: str) -> dict:
    return _get(res, "robustness", "models", model)


def _paired_test(res: dict, kind: str, what: str, first: str, op: str, threshold: float) -> Compare:
    """``first`` - the other model's accuracy (``kind``: clean or robust = the headline), on the
    same images: Newcombe's paired interval from the robustness stage's 2 x 2 table, else the
    independent one from the counts."""
    s, a = _rob(res, "std"), _rob(res, "adv")
    key, n_key = ("clean_accuracy", "n") if kind == "clean" else ("robust_accuracy", "robust_n")
    x, y = (a, s) if first == "adv" else (s, a)
    labels = (f"{first.upper()} {kind}", f"{'STD' if first == 'adv' else 'ADV'} {kind}")
    table = (_get(res, "robustness").get("paired") or {}).get(kind)
    # the 2 x 2 table must be of the very images the two accuracies count
    if table and table.get("n") == x.get(n_key) == y.get(n_key):
        t = table
        cells = (t["both"], t["adv_only"], t["std_only"], t["neither"]) if first == "adv" else (t["both"], t["std_only"], t["adv_only"], t["neither"])
        counts = {labels[0]: _kn(_count(x[key], x.get(n_key))), labels[1]: _kn(_count(y[key], y.get(n_key)))}
        return Compare(what, x[key] - y[key], op, threshold, newcombe_paired(*cells), "Newcombe paired (same images), 95%", counts)
    return diff_test(what, x[key], y[key], x.get(n_key), y.get(n_key), op, threshold, labels)


def _clean_drop(res: dict) -> tuple[dict, Any]:
    s, a = _rob(res, "std")["clean_accuracy"], _rob(res, "adv")["clean_accuracy"]
    return ({"STD clean": _r(s), "ADV clean": _r(a), "STD - ADV": _r(s - a)},
            _paired_test(res, "clean", "STD clean - ADV clean", "std", ">", CLEAN_DROP))


def _robust_gain(res: dict) -> tuple[dict, Any]:
    s, a = _rob(res, "std"), _rob(res, "adv")
    nums = {"STD robust": _r(s["robust_accuracy"]), "ADV robust": _r(a["robust_accuracy"]),
            "attack": a.get("robust_attack", "PGD"), "ADV - STD": _r(a["robust_accuracy"] - s["robust_accuracy"])}
    return nums, _paired_test(res, "robust", "ADV robust - STD robust (headline)", "adv", ">", ROBUST_GAIN)


def _shape_bias(res: dict) -> tuple[dict, Any]:
    s, a = _get(res, "bias", "models", "std"), _get(res, "bias", "models", "adv")
    sb, ab = _get(s, "shape_bias"), _get(a, "shape_bias")
    ns = s.get("shape_hits", 0) + s.get("texture_hits", 0) if "shape_hits" in s else None
    na = a.get("shape_hits", 0) + a.get("texture_hits", 0) if "shape_hits" in a else None
    test = diff_test("ADV shape bias - STD shape bias", ab, sb, na, ns, ">=", SHAPE_BIAS_GAIN, ("ADV shape hits", "STD shape hits"))
    return {"STD shape bias": _r(sb), "ADV shape bias": _r(ab), "ADV - STD": _r(ab - sb)}, test


def _single_probe(probe: str, margin: float) -> Callable[[dict], tuple[dict, Any]]:
    def check(res: dict) -> tuple[dict, Any]:
        s = _get(res, "transforms", "models", "std", probe)
        a = _get(res, "transforms", "models", "adv", probe)
        n = _get(res, "transforms").get("n")
        test = diff_test(f"ADV {probe} - STD {probe}", a, s, n, n, ">", margin, (f"ADV {probe}", f"STD {probe}"))
        return {f"STD {probe}": _r(s), f"ADV {probe}": _r(a), "ADV - STD": _r(a - s)}, test

    return check


def _silhouettes(res: dict) -> tuple[dict, Any]:
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
    n = _get(res, "transforms").get("n")
    return nums, diff_test(f"ADV {probe} - STD {probe}", a, s, n, n, ">", 0.02, (f"ADV {probe}", f"STD {probe}"))


def _curve(res: dict, model: str, probe: str) -> tuple[list, list]:
    c = _get(res, "transforms", "models", model, probe)
    return list(_get(c, "levels")), list(_get(c, "accuracy"))


def _median(res: dict) -> tuple[dict, Any]:
    lv, s = _curve(res, "std", "median")
    _, a = _curve(res, "adv", "median")
    if len(lv) < 2:
        raise _Missing("transforms/median (needs >= 2 levels)")
    n = _get(res, "transforms").get("n")
    g0, gN = a[0] - s[0], a[-1] - s[-1]
    nums = {
        f"STD at {lv[0]}x": _r(s[0]), f"ADV at {lv[0]}x": _r(a[0]),
        f"STD at {lv[-1]}x": _r(s[-1]), f"ADV at {lv[-1]}x": _r(a[-1]),
        "gap ADV-STD first": _r(g0), "gap ADV-STD last": _r(gN),
    }
    last = diff_test(f"ADV - STD at {lv[-1]}x", a[-1], s[-1], n, n, ">", 0.0, (f"ADV at {lv[-1]}x", f"STD at {lv[-1]}x"))
    grows = boot_test("gap last - gap first", lambda a0, s0, aN, sN: (aN - sN) - (a0 - s0), [a[0], s[0], a[-1], s[-1]], [n] * 4,
                      ">", 0.0, [f"ADV at {lv[0]}x", f"STD at {lv[0]}x", f"ADV at {lv[-1]}x", f"STD at {lv[-1]}x"])
    return nums, AllOf((last, grows))


#: the clean STD - ADV difference the blur curves must keep (below it there is no difference)
BLUR_GAP_MIN = 0.01


def _blur_gap_kept(res: dict) -> tuple[dict, Any]:
    lv, s = _curve(res, "std", "blur")
    _, a = _curve(res, "adv", "blur")
    if len(lv) < 2:
        raise _Missing("transforms/blur (needs >= 2 levels)")
    n = _get(res, "transforms").get("n")
    # Main paper, Sec. 4.1: "In the Gaussian blur setting, the accuracy of both models decreases
    # while maintaining the difference of their accuracy." The difference is the clean one (STD
    # ahead: the trade-off), and it must be kept at every sigma, not only at the two ends (curves
    # that cross in between do not keep it); a tied pair has no difference to keep.
    gaps = [si - ai for si, ai in zip(s, a)]
    g0 = gaps[0]
    drift = max(abs(g - g0) for g in gaps)
    nums = {
        f"STD sigma {lv[0]}": _r(s[0]), f"STD sigma {lv[-1]}": _r(s[-1]),
        f"ADV sigma {lv[0]}": _r(a[0]), f"ADV sigma {lv[-1]}": _r(a[-1]),
        "gap STD-ADV first": _r(g0), "gap STD-ADV last": _r(gaps[-1]), "largest change of the gap": _r(drift),
    }

    def largest_change(*p):
        k = len(p) // 2
        g = [p[i] - p[k + i] for i in range(k)]
        return _max_abs([gi - g[0] for gi in g])

    parts = (
        diff_test("STD drop over the sigma grid", s[0], s[-1], n, n, ">", 0.05, (f"STD sigma {lv[0]}", f"STD sigma {lv[-1]}")),
        diff_test("ADV drop over the sigma grid", a[0], a[-1], n, n, ">", 0.05, (f"ADV sigma {lv[0]}", f"ADV sigma {lv[-1]}")),
        diff_test("STD - ADV without blur", s[0], a[0], n, n, ">", BLUR_GAP_MIN, ("STD clean", "ADV clean")),
        boot_test("largest change of the STD-ADV gap", largest_change, s + a, [n] * (2 * len(s)), "<=", 0.10,
                  [f"STD sigma {v}" for v in lv] + [f"ADV sigma {v}" for v in lv]),
    )
    return nums, AllOf(parts)


def _max_abs(xs: list) -> Any:
    """max_i |x_i| for floats or numpy arrays alike."""
    out = abs(xs[0])
    for x in xs[1:]:
        out = (abs(x) > out) * abs(x) + (abs(x) <= out) * out
    return out


def _blur_retention(res: dict) -> tuple[dict, Any]:
    lv, s = _curve(res, "std", "blur")
    _, a = _curve(res, "adv", "blur")
    if len(lv) < 2 or s[0] <= 0 or a[0] <= 0:
        raise _Missing("transforms/blur (needs >= 2 levels and non-zero clean accuracy)")
    n = _get(res, "transforms").get("n")
    rs, ra = s[-1] / s[0], a[-1] / a[0]
    test = boot_test(f"ADV kept - STD kept at sigma {lv[-1]}", lambda a0, aN, s0, sN: aN / _pos(a0) - sN / _pos(s0),
                     [a[0], a[-1], s[0], s[-1]], [n] * 4, ">", 0.05,
                     [f"ADV sigma {lv[0]}", f"ADV sigma {lv[-1]}", f"STD sigma {lv[0]}", f"STD sigma {lv[-1]}"])
    return {f"STD kept at sigma {lv[-1]}": _r(rs), f"ADV kept at sigma {lv[-1]}": _r(ra), "ADV - STD": _r(ra - rs)}, test


def _pos(x: Any) -> Any:
    """``x`` floored at 1e-12 (a bootstrap draw of a clean accuracy can be 0)."""
    return x * (x > 1e-12) + 1e-12 * (x <= 1e-12)


def _reversal(res: dict) -> tuple[dict, Any]:
    s0 = _get(res, "transforms", "models", "std", "clean")
    a0 = _get(res, "transforms", "models", "adv", "clean")
    s = _get(res, "transforms", "models", "std", "invert")
    a = _get(res, "transforms", "models", "adv", "invert")
    n = _get(res, "transforms").get("n")
    ds, da = s0 - s, a0 - a
    test = boot_test("|STD drop - ADV drop|", lambda p, q, u, v: abs((p - q) - (u - v)), [s0, s, a0, a], [n] * 4, "<=", 0.10,
                     ["STD clean", "STD reversed", "ADV clean", "ADV reversed"])
    return {"STD drop": _r(ds), "ADV drop": _r(da), "|difference|": _r(abs(ds - da))}, test


def _filters_smaller(res: dict) -> tuple[dict, Any]:
    s = _get(res, "neurons", "models", "std", "first_layer_norm")
    a = _get(res, "neurons", "models", "adv", "first_layer_norm")
    ratio = a / s if s else float("nan")
    return {"STD mean |w|": _r(s), "ADV mean |w|": _r(a), "ADV / STD": _r(ratio)}, point_test("ADV / STD mean |w|", ratio, "<", 0.95, WEIGHTS)


def _filters_smoother(res: dict) -> tuple[dict, Any]:
    s = _get(res, "neurons", "models", "std", "first_layer_hf")
    a = _get(res, "neurons", "models", "adv", "first_layer_hf")
    return ({"STD high-freq share": _r(s), "ADV high-freq share": _r(a), "ADV - STD": _r(a - s)},
            point_test("ADV - STD high-frequency share", a - s, "<", -0.02, WEIGHTS))


def _simpler_neurons(res: dict) -> tuple[dict, Any]:
    s = _get(res, "neurons", "models", "std", "concepts_per_channel")
    a = _get(res, "neurons", "models", "adv", "concepts_per_channel")
    ratio = a / s if s else float("nan")
    return ({"STD concepts/channel": _r(s), "ADV concepts/channel": _r(a), "ADV - STD": _r(a - s)},
            point_test("ADV / STD concepts per channel", ratio, "<", 0.95, WEIGHTS))


def _saliency_on_object(res: dict) -> tuple[dict, Any]:
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
    for m in methods:
        nums[f"{m}: STD"] = _r(s[m])
        nums[f"{m}: ADV"] = _r(a[m])
    test = Majority(tuple(point_test(f"{m}: ADV - STD object share", a[m] - s[m], ">", 0.02, NO_PER_IMAGE) for m in methods))
    nums["methods where ADV > STD + 0.02"] = test.tally()
    return nums, test


def _localisation(res: dict) -> tuple[dict, Any]:
    """Aggarwal et al.: "low-perturbation adversarial training improves [...] localization
    performance". ADV must beat STD by > 0.02 with both box thresholds (the result must not
    hang on the threshold) and beat a centred box, which a constant map would give."""
    models = _get(res, "localisation", "models")
    s, a = _get(models, "std", "box_accuracy"), _get(models, "adv", "box_accuracy")
    ns, na = models["std"].get("n"), models["adv"].get("n")
    nums = {"STD IoU>=0.5 (energy)": _r(s), "ADV IoU>=0.5 (energy)": _r(a), "ADV - STD (energy)": _r(a - s)}
    parts = [diff_test("ADV - STD box accuracy (energy)", a, s, na, ns, ">", 0.02, ("ADV boxes", "STD boxes"))]
    if "max_threshold" in models["std"] and "max_threshold" in models["adv"]:
        sm, am = _get(models, "std", "max_threshold", "box_accuracy"), _get(models, "adv", "max_threshold", "box_accuracy")
        nums.update({"STD IoU>=0.5 (max)": _r(sm), "ADV IoU>=0.5 (max)": _r(am), "ADV - STD (max)": _r(am - sm)})
        parts.append(diff_test("ADV - STD box accuracy (max)", am, sm, na, ns, ">", 0.02, ("ADV boxes (max)", "STD boxes (max)")))
    centre = _get(res, "localisation").get("centre_box_accuracy")
    if centre is not None:
        nums["centred box"] = _r(centre)
        # a task a constant map already solves cannot show a map localising: if even a map with
        # every box right (n of n) would not be clearly above the centred box, nothing is tested
        perfect = diff_test("perfect map - centred box", 1.0, centre, na, na, ">", 0.0, ("", ""))
        if perfect.verdict() != HOLDS:
            raise _Untestable(f"a centred box already localises {centre:.3g} of the objects (IoU >= 0.5), so no map "
                              f"could beat it on {na} images; the data's objects are too large or too central to test "
                              "localisation (boxes on real images, e.g. examples/imagenet.toml, can)", nums)
        parts.append(diff_test("ADV - centred box", a, centre, na, na, ">", 0.0, ("ADV boxes", "centred boxes")))
    return nums, AllOf(tuple(parts))


def _generation(res: dict) -> tuple[dict, Any]:
    """Aggarwal et al. (after Tsipras et al.): "adding a large targeted adversarial perturbation
    leads to an image resembling the target class". A judge of one kind rewards its own kind's
    perturbations, so a judge of each kind must see ADV's images as the target more often."""
    g = _get(res, "generation")
    judges = [j for j in (g.get("judge"), g.get("judge_adv")) if j]
    if len(judges) < 2:
        raise _Missing("generation/judge_adv (the claim needs a judge of each kind)")
    nums, parts = {}, []
    for j in judges:
        s = _get(g, "models", "std", "judges", j, "agreement")
        a = _get(g, "models", "adv", "judges", j, "agreement")
        nums.update({f"{j}: STD's judged as target": _r(s), f"{j}: ADV's judged as target": _r(a), f"{j}: ADV - STD": _r(a - s)})
        parts.append(diff_test(f"{j}: ADV - STD judged as target", a, s, g.get("n"), g.get("n"), ">", 0.10, (f"{j}: ADV's", f"{j}: STD's")))
    return nums, AllOf(tuple(parts))


def _sanity_guided(res: dict) -> tuple[dict, Any]:
    nums, parts = {}, []
    for model in ("std", "adv"):
        curve = _get(res, "sanity", "curves", model, "guided", "spearman_abs")
        nums[f"{model.upper()} rank corr. after full randomisation"] = _r(curve[-1])
        parts.append(point_test(f"{model.upper()} rank correlation after full randomisation", curve[-1], "<", 0.5, NO_PER_IMAGE))
    return nums, AllOf(tuple(parts))


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
#: the transfer table holds means over repeats, not counts
FUSION_WHY = "a mean test accuracy over repeats (the table keeps no counts): no interval"


def _fusion(res: dict) -> tuple[dict, Any]:
    sizes, table = _fusion_table(res, ("adv+adv", "std+std"))
    lo, hi = table[sizes[0]], table[sizes[-1]]
    nums = {}
    for s in (sizes[0], sizes[-1]):
        best = max(table[s], key=table[s].get)
        nums[f"best @ {s}px"] = f"{best.upper()} {table[s][best]:.4f}"
        for v in ("std+std", "adv+adv"):
            nums[f"{v.upper()} @ {s}px"] = _r(table[s][v])
    test = AllOf((point_test(f"ADV+ADV - best @ {sizes[0]}px", lo["adv+adv"] - max(lo.values()), ">=", -FUSION_TIE, FUSION_WHY),
                  point_test(f"STD+STD - best @ {sizes[-1]}px", hi["std+std"] - max(hi.values()), ">=", -FUSION_TIE, FUSION_WHY)))
    return nums, test


def _fusion_mixed(res: dict) -> tuple[dict, Any]:
    sizes, table = _fusion_table(res, ("std+adv",))
    nums, parts = {}, []
    for s in sizes:
        gap = max(table[s].values()) - table[s]["std+adv"]
        nums[f"STD+ADV @ {s}px"] = _r(table[s]["std+adv"])
        nums[f"gap to best @ {s}px"] = _r(gap)
        parts.append(point_test(f"best - STD+ADV @ {s}px", gap, "<=", FUSION_NEAR, FUSION_WHY))
    return nums, AllOf(tuple(parts))


def _robust_dataset(res: dict) -> tuple[dict, Any]:
    """D_R's robust accuracy against the same recipe on the original images (or, without that
    baseline, the STD model's PGD accuracy), at the study's threat and at every ``eval_threats``
    entry; the claim holds if D_R is ahead by more than 0.10 at one of these threats, all of which
    the spec declared before the run (a small model can be robust at L2 0.25 and at no L-inf 8/255)."""
    d = _get(res, "construct", "datasets")
    r = _get(d, "robust", "robust_accuracy")
    n_r = d["robust"].get("n")
    nums = {"D_R model clean": _r(_get(d, "robust", "clean_accuracy")), "D_R model robust": _r(r)}
    if "original" in d:
        base, n_b = _get(d, "original", "robust_accuracy"), d["original"].get("n")
        nums["same recipe on the original images: robust"] = _r(base)
    else:  # the same attack as the construct stage's: the STD model's PGD number, not the headline
        std = _rob(res, "std")
        base, n_b = std.get("pgd_robust_accuracy", std["robust_accuracy"]), std.get("n")
        nums["STD model robust (robustness stage)"] = _r(base)  # PGD, the construct stage's attack
    nums["difference"] = _r(r - base)
    parts = [diff_test("D_R - baseline robust accuracy", r, base, n_r, n_b, ">", 0.10, ("D_R model", "baseline"))]
    best = r - base
    if "original" in d:
        theirs = {e["threat"]: e for e in d["original"].get("extra_threats", [])}
        for e in d["robust"].get("extra_threats", []):
            if e["threat"] in theirs:
                t = theirs[e["threat"]]
                diff = e["robust_accuracy"] - t["robust_accuracy"]
                nums[f"{e['threat']}: D_R, original, difference"] = [_r(e["robust_accuracy"]), _r(t["robust_accuracy"]), _r(diff)]
                parts.append(diff_test(f"{e['threat']}: D_R - original", e["robust_accuracy"], t["robust_accuracy"],
                                       e.get("n", n_r), t.get("n", n_b), ">", 0.10, ("D_R model", "original")))
                best = max(best, diff)
    nums["largest difference"] = _r(best)
    return nums, AnyOf(tuple(parts))


def _nonrobust(kind: str) -> Callable[[dict], tuple[dict, Any]]:
    def check(res: dict) -> tuple[dict, Any]:
        entry = _get(res, "construct", "datasets", kind)
        acc = _get(entry, "clean_accuracy")
        chance = _get(res, "construct", "chance")
        name = "D_det" if kind == "det" else "D_rand"
        c = _count(acc, entry.get("n"))
        test = (Compare(f"{name} clean accuracy", acc, ">", 2 * chance, wilson(*c), "Wilson score, 95%", {name: _kn(c)}) if c
                else point_test(f"{name} clean accuracy", acc, ">", 2 * chance, "no counts: compared as measured"))
        return {f"{name} model clean (original labels)": _r(acc), "chance": _r(chance), "ratio to chance": _r(acc / chance)}, test

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


def _faithful(res: dict) -> tuple[dict, Any]:
    methods, s, a = _per_method(res, "road_gap")
    nums, parts = {}, []
    for m in methods:
        nums[f"{m}: STD ROAD gap"], nums[f"{m}: ADV ROAD gap"] = _r(s[m]["road_gap"]), _r(a[m]["road_gap"])
        parts.append(point_test(f"{m}: ADV - STD ROAD gap", a[m]["road_gap"] - s[m]["road_gap"], ">", FAITHFUL_MARGIN, NO_PER_IMAGE))
    test = Majority(tuple(parts))
    nums[f"methods where ADV > STD + {FAITHFUL_MARGIN}"] = test.tally()
    return nums, test


def _stable(res: dict) -> tuple[dict, Any]:
    methods, s, a = _per_method(res, "max_sensitivity")
    nums, parts = {}, []
    for m in methods:
        ss, aa = s[m]["max_sensitivity"], a[m]["max_sensitivity"]
        nums[f"{m}: STD max-sensitivity"], nums[f"{m}: ADV max-sensitivity"] = _r(ss), _r(aa)
        parts.append(point_test(f"{m}: ADV / STD max-sensitivity", aa / ss if ss else float("nan"), "<", STABLE_RATIO, NO_PER_IMAGE))
    test = Majority(tuple(parts))
    nums[f"methods where ADV < {STABLE_RATIO} x STD"] = test.tally()
    return nums, test


#: the thresholds of the accuracy claims
CLEAN_DROP = 0.01
ROBUST_GAIN = 0.10
SHAPE_BIAS_GAIN = 0.10


#: every rule is judged on the 95% interval of its estimate (module docstring): "holds" needs the whole interval
#: past the threshold, and a threshold inside the interval (or on the estimate) is "inconclusive"
CLAIMS: list[Claim] = [
    Claim("clean_tradeoff", MAIN, "ADV models lose clean accuracy (the robustness-accuracy trade-off, Table 1).",
          f"holds if STD clean - ADV clean > {CLEAN_DROP} (Newcombe's paired 95% interval wholly above)", _clean_drop),
    Claim("robust_gain", MAIN, "ADV training buys robustness: ADV keeps far more accuracy under attack.",
          f"holds if ADV robust - STD robust > {ROBUST_GAIN}, robust = the headline (per-image worst case of PGD and the "
          "ensemble; Newcombe's paired 95% interval wholly above)", _robust_gain),
    Claim("shape_bias", CHEN, "ADV models rely more on shape than on texture (cue-conflict shape bias).",
          f"holds if ADV shape bias - STD shape bias >= {SHAPE_BIAS_GAIN}", _shape_bias),
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
          _sanity_guided, compares_models=False),
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
          "eval_threats", _robust_dataset, compares_models=False),
    Claim("nonrobust_dataset", ILYAS, "A model trained on the relabelled non-robust set D_det generalises to the original test labels.",
          "holds if its clean accuracy on the original test set > 2 x chance", _nonrobust("det"), compares_models=False),
    Claim("nonrobust_rand", ILYAS, "A model trained on the relabelled non-robust set D_rand generalises to the original test labels.",
          "holds if its clean accuracy on the original test set > 2 x chance", _nonrobust("rand"), compares_models=False),
]


def _robust_text(m: dict) -> str:
    c = _count(m["robust_accuracy"], m.get("robust_n"))
    if not c:
        return f"{m['robust_accuracy']:.3f}"
    lo, hi = wilson(*c)
    return f"{m['robust_accuracy']:.3f} ({c[0]}/{c[1]}, 95% CI [{lo:.3f}, {hi:.3f}])"


def _above(m: dict, what: str, chance: float) -> Compare:
    c = _count(m["robust_accuracy"], m.get("robust_n"))
    return Compare(what, m["robust_accuracy"], ">", chance, wilson(*c) if c else None, "Wilson score, 95%" if c else "no counts")


#: what the gate says to do when the ADV model is not robust
GATE_REMEDY = ("Remedy: an ADV model trained with FGSM or FGSM-RS that ends non-robust shows the pattern of catastrophic "
               "overfitting (Wong et al. 2020): see the training section's per-epoch check-PGD accuracy, and train again with "
               "a smaller FGSM-RS step, GradAlign (Andriushchenko & Flammarion 2020) or PGD (models.adv.mode = \"pgd\"); a "
               "loaded ADV checkpoint must be an adversarially trained model at this threat.")


def validity_gate(results: dict) -> dict:
    """Is the ADV model robust in a meaningful sense? Its headline robust accuracy must be above
    the STD model's (Newcombe's paired interval of the difference wholly above 0) and above chance
    (1 / classes; its Wilson interval wholly above). ``status``: ``ok``, ``adv not robust`` (every
    STD-vs-ADV claim is then "not measured") or ``not measured``; ``warnings`` also flags an STD
    model that is itself robust (its interval wholly above chance). Covers loaded checkpoints too:
    it reads only the robustness stage's numbers."""
    try:
        s, a = _rob(results, "std"), _rob(results, "adv")
        s["robust_accuracy"], a["robust_accuracy"]
    except (_Missing, KeyError):
        return {"status": "not measured", "warnings": [
            "The ADV model's robustness was not measured (no robustness stage): the STD-vs-ADV claims are judged "
            "without knowing that the ADV model is robust."]}
    classes = (results.get("data") or {}).get("classes") or []
    chance = 1 / len(classes) if classes else 0.0
    diff = _paired_test(results, "robust", "ADV robust - STD robust (headline)", "adv", ">", 0.0)
    adv_chance = _above(a, "ADV robust - chance", chance)
    std_chance = _above(s, "STD robust - chance", chance)
    attack = a.get("robust_attack", "PGD")
    versus = f"ADV {_robust_text(a)} vs STD {_robust_text(s)}, chance {chance:.3f}; {attack}"
    gate = {"status": "ok", "adv_vs_std": diff.to_dict(), "adv_vs_chance": adv_chance.to_dict(), "std_vs_chance": std_chance.to_dict(),
            "chance": _r(chance), "versus": versus, "warnings": []}
    if diff.verdict() != HOLDS or adv_chance.verdict() != HOLDS:
        gate["status"] = "adv not robust"
        gate["reason"] = f"not measured: the ADV model is not robust ({versus})"
        gate["warnings"].append(f"The ADV model is not robust: {versus}. Every claim comparing STD with ADV is "
                                f"\"not measured\". {GATE_REMEDY}")
    if std_chance.verdict() == HOLDS and classes:
        gate["warnings"].append(f"The \"STD\" model is robust: its headline robust accuracy {_robust_text(s)} is above chance "
                                f"({chance:.3f}); the comparison is not standard against robust training. Check how it was trained "
                                "(or which checkpoint was loaded).")
    return gate


def evaluate_claims(results: dict) -> list[dict]:
    """Every claim with its numbers, its tests (estimate, interval, counts) and its verdict
    (``results`` = results.json's ``results``), after the validity gate."""
    gate = validity_gate(results)
    out = []
    for c in CLAIMS:
        entry: dict = {"id": c.id, "paper": c.paper, "claim": c.statement, "rule": c.rule}
        try:
            numbers, test = c.check(results)
            entry.update(numbers=numbers, tests=[t.to_dict() for t in test.leaves()], verdict=test.verdict())
        except _Missing as e:
            entry.update(numbers={}, verdict=NOT_MEASURED, note=f"missing: {e}")
        except _Untestable as e:
            entry.update(numbers=e.numbers, verdict=NOT_MEASURED, note=f"not testable on this data: {e.reason}")
        except (ZeroDivisionError, TypeError, KeyError, IndexError, ValueError) as e:
            entry.update(numbers={}, verdict=NOT_MEASURED, note=f"could not compute: {e}")
        if c.compares_models and gate["status"] == "adv not robust" and entry["verdict"] != NOT_MEASURED:
            # the numbers stay, for the record; no verdict is drawn from two non-robust models
            entry.update(verdict=NOT_MEASURED, gated=True, note=gate["reason"])
        out.append(entry)
    return out
