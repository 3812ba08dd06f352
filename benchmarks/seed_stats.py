"""Seed statistics for benchmarks that compare arms over a few seeds: mean / SD / 95% t-interval, a
two-sample verdict rule (supports / refutes / cannot tell), and accuracy curves read by linear
interpolation (value at an x, first crossing of a target, area under, a mean +- SD band over seeds).
Pure functions on plain lists and dicts; used by benchmarks/credit_ablation.py."""

from __future__ import annotations

import math

# Student t quantiles t_{0.975, df} (no scipy in the environment)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


# ----------------------------------------------------------------------------- statistics (pure)

def t975(df: int) -> float:
    """Two-sided 95% Student t quantile for ``df`` degrees of freedom (table; conservative between rows)."""
    if df < 1:
        return math.inf
    for d in sorted(_T975):
        if d >= df:
            return _T975[d] if d == df else _T975[max(k for k in _T975 if k <= df)]
    return 1.96


def spread(values: list[float | None]) -> dict:
    """Mean, sample SD, 95% t-interval, min/max and the values (None values are left out and counted)."""
    vals = [float(v) for v in values if v is not None]
    out: dict = {"n": len(vals), "values": [round(v, 4) for v in vals], "missing": len(values) - len(vals)}
    if not vals:
        return out | {"mean": None, "sd": None, "ci95": None, "min": None, "max": None}
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    half = t975(len(vals) - 1) * sd / math.sqrt(len(vals)) if sd is not None else None
    return out | {"mean": round(mean, 4), "sd": None if sd is None else round(sd, 4),
                  "ci95": None if half is None else [round(mean - half, 4), round(mean + half, 4)],
                  "min": round(min(vals), 4), "max": round(max(vals), 4)}


def compare(arm: list[float | None], base: list[float | None], direction: int, floor: float = 0.0) -> dict:
    """Verdict on "arm is higher (direction=+1) / lower (-1) than base" from per-seed values (``VERDICT_RULE``)."""
    a = [float(v) for v in arm if v is not None]
    b = [float(v) for v in base if v is not None]
    out: dict = {"arm": spread(a), "grpo": spread(b), "direction": "higher" if direction > 0 else "lower"}
    if not a or not b:
        return out | {"diff": None, "threshold": None, "verdict": "cannot tell (no values)"}
    diff = sum(a) / len(a) - sum(b) / len(b)
    out["diff"] = round(diff, 4)
    if len(a) < 2 or len(b) < 2:
        return out | {"threshold": None, "verdict": "cannot tell (fewer than 2 seeds)"}
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    ss = sum((v - ma) ** 2 for v in a) + sum((v - mb) ** 2 for v in b)
    pooled = math.sqrt(ss / (len(a) + len(b) - 2))
    threshold = max(t975(len(a) + len(b) - 2) * pooled * math.sqrt(1 / len(a) + 1 / len(b)), floor)
    out.update({"pooled_sd": round(pooled, 4), "effect_size": None if pooled == 0 else round(diff / pooled, 2),
                "threshold": round(threshold, 4)})
    signed = diff * direction
    verdict = "supports" if signed > threshold else "refutes" if -signed > threshold else "cannot tell at this scale"
    return out | {"verdict": verdict}


def compare_to_constant(values: list[float | None], bound: float, below: bool) -> dict:
    """Verdict on "the mean is below (``below``) / above ``bound``" from the 95% t-interval of the mean."""
    s = spread(values)
    out = {"arm": s, "bound": bound, "direction": "below" if below else "above"}
    if s["n"] < 2:
        return out | {"verdict": "cannot tell (fewer than 2 seeds)"}
    lo, hi = s["ci95"]
    if (hi < bound) if below else (lo > bound):
        return out | {"verdict": "supports"}
    if (lo > bound) if below else (hi < bound):
        return out | {"verdict": "refutes"}
    return out | {"verdict": "cannot tell at this scale"}


def combine(verdicts: list[str]) -> str:
    """A claim with several parts: refuted if a part is, supported if every part is, else cannot tell."""
    if any(v == "refutes" for v in verdicts):
        return "refutes"
    if verdicts and all(v == "supports" for v in verdicts):
        return "supports"
    return "cannot tell at this scale"


# ----------------------------------------------------------------------------- curves (pure)

def interp(curve: list[dict], x_key: str, x: float, y_key: str = "greedy") -> float | None:
    """``y_key`` at ``x`` along ``curve`` (points sorted by x_key), linear between points; None past either end."""
    pts = [p for p in curve if p.get(y_key) is not None]
    if not pts or x < pts[0][x_key] - 1e-9 or x > pts[-1][x_key] + 1e-9:
        return None
    for a, b in zip(pts, pts[1:]):
        if a[x_key] <= x <= b[x_key]:
            w = (x - a[x_key]) / max(b[x_key] - a[x_key], 1e-12)
            return a[y_key] + w * (b[y_key] - a[y_key])
    return pts[-1][y_key]


def first_crossing(curve: list[dict], x_key: str, target: float, y_key: str = "greedy") -> float | None:
    """Smallest x at which the curve (linear between points) reaches ``target``; None if it never does."""
    pts = [p for p in curve if p.get(y_key) is not None]
    if pts and pts[0][y_key] >= target:
        return float(pts[0][x_key])
    for a, b in zip(pts, pts[1:]):
        if b[y_key] >= target > a[y_key]:
            w = (target - a[y_key]) / (b[y_key] - a[y_key])
            return a[x_key] + w * (b[x_key] - a[x_key])
    return None


def area_under(curve: list[dict], x_key: str, x_end: float, y_key: str = "greedy") -> float | None:
    """Mean of y over [first x, x_end] (trapezoids); None if the curve does not reach x_end."""
    pts = [p for p in curve if p.get(y_key) is not None and p[x_key] <= x_end + 1e-9]
    end = interp(curve, x_key, x_end, y_key)
    if not pts or end is None:
        return None
    if pts[-1][x_key] < x_end - 1e-9:
        pts = pts + [{x_key: x_end, y_key: end}]
    if len(pts) == 1:
        return float(pts[0][y_key])
    total = sum((b[x_key] - a[x_key]) * (a[y_key] + b[y_key]) / 2 for a, b in zip(pts, pts[1:]))
    return total / (pts[-1][x_key] - pts[0][x_key])


def band(curves: list[list[dict]], x_key: str, y_key: str = "greedy", points: int = 40) -> dict:
    """Mean and SD over seeds of y on a common x grid (0 .. the shortest curve's end); points where any
    seed has a value. ``x_key='step'`` uses the evaluation steps every seed has."""
    if not curves:
        return {"x": [], "mean": [], "sd": []}
    if x_key == "step":
        xs = sorted(set.intersection(*[{p["step"] for p in c if p.get(y_key) is not None} for c in curves]))
    else:
        end = min(max(p[x_key] for p in c) for c in curves)
        xs = [end * i / (points - 1) for i in range(points)] if end > 0 else [0.0]
    mean, sd = [], []
    for x in xs:
        ys = [v for c in curves if (v := interp(c, x_key, x, y_key)) is not None]
        m = sum(ys) / len(ys)
        mean.append(round(m, 4))
        sd.append(round(math.sqrt(sum((y - m) ** 2 for y in ys) / (len(ys) - 1)), 4) if len(ys) > 1 else 0.0)
    return {"x": [round(x, 2) for x in xs], "mean": mean, "sd": sd}
