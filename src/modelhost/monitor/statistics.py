"""statistics.json (reference 8.4) from column statistics, and the KLL distribution read back from one."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from modelhost.monitor.columns import KLL_C, KLL_K, ColumnStats

BUCKETS = 10
TOP_CATEGORIES = 20


def kll_levels(stats: ColumnStats) -> list[list[float]]:
    """The sketch's retained items grouped by level (an item at level i stands for 2**i values)."""
    levels: dict[int, list[float]] = {}
    for item, weight in stats.kll:
        levels.setdefault(int(round(math.log2(weight))), []).append(float(item))
    return [sorted(levels.get(i, [])) for i in range(max(levels, default=-1) + 1)]


def kll_buckets(stats: ColumnStats) -> list[dict[str, float]]:
    """10 equal-width buckets from min to max with the counts the sketch estimates."""
    lo, hi = stats.min, stats.max
    width = (hi - lo) / BUCKETS
    bounds = [lo + i * width for i in range(BUCKETS)] + [hi]
    if width == 0:
        cdf = [0.0] * (BUCKETS - 1) + [1.0]
    else:
        cdf = list(stats.kll.get_cdf(bounds[1:-1]))[: BUCKETS - 1] + [1.0]
    out, prev = [], 0.0
    for i in range(BUCKETS):
        out.append({"lower_bound": bounds[i], "upper_bound": bounds[i + 1], "count": (cdf[i] - prev) * stats.count})
        prev = cdf[i]
    return out


def feature_statistics(stats: ColumnStats) -> dict[str, Any]:
    kind = stats.inferred_type
    common = {"num_present": stats.present, "num_missing": stats.missing}
    out: dict[str, Any] = {"name": stats.name, "inferred_type": kind}
    if kind in ("Integral", "Fractional"):
        out["numerical_statistics"] = {
            "common": common,
            "mean": stats.mean,
            "sum": stats.sum,
            "std_dev": stats.std_dev,
            "min": stats.min,
            "max": stats.max,
            "distribution": {
                "kll": {
                    "buckets": kll_buckets(stats),
                    "sketch": {"parameters": {"c": KLL_C, "k": float(KLL_K)}, "data": kll_levels(stats)},
                }
            },
        }
    elif kind == "String":
        top = sorted(stats.categories.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CATEGORIES]
        out["string_statistics"] = {
            "common": common,
            "distinct_count": float(len(stats.categories)),
            "distribution": {"categorical": {"buckets": [{"value": v, "count": c} for v, c in top]}},
        }
    else:
        out["string_statistics"] = {"common": common, "distinct_count": 0.0}
    return out


def statistics_document(columns: list[ColumnStats], item_count: int) -> dict[str, Any]:
    return {
        "version": 0,
        "dataset": {"item_count": item_count},
        "features": [feature_statistics(c) for c in columns],
    }


def weighted_cdf(data: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """(sorted items, cumulative fraction) of a sketch given as levels of items (level i weighs 2**i)."""
    items = np.concatenate([np.asarray(level, dtype=np.float64) for level in data]) if data else np.empty(0)
    weights = np.concatenate([np.full(len(level), 2.0**i) for i, level in enumerate(data)]) if data else np.empty(0)
    order = np.argsort(items, kind="stable")
    items, weights = items[order], weights[order]
    cum = np.cumsum(weights)
    return items, cum / cum[-1] if len(cum) else cum


def linf_distance(a: list[list[float]], b: list[list[float]]) -> float:
    """The largest gap between the two sketches' CDFs, over every point either one retains."""
    xa, fa = weighted_cdf(a)
    xb, fb = weighted_cdf(b)
    if not len(xa) or not len(xb):
        return 0.0
    points = np.union1d(xa, xb)

    def at(x: np.ndarray, f: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(x, points, side="right") - 1
        return np.where(idx >= 0, f[np.clip(idx, 0, None)], 0.0)

    return float(np.max(np.abs(at(xa, fa) - at(xb, fb))))
