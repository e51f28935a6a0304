"""Constraint checks of a monitoring run against a baseline (reference 8.6), in SageMaker's words,
and the per-feature metrics the run emits (CloudWatch's ``feature_*`` names)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from modelhost.monitor.analysis import Analysis
from modelhost.monitor.columns import ColumnStats
from modelhost.monitor.statistics import kll_levels, linf_distance

NUMERIC = ("Integral", "Fractional")
KS_ALPHA_FACTOR = 1.358  # c(alpha) of the two-sample Kolmogorov-Smirnov test at alpha = 0.05


@dataclass
class Outcome:
    violations: list[dict[str, str]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def add(self, feature: str, check: str, description: str) -> None:
        self.violations.append({"feature_name": feature, "constraint_check_type": check, "description": description})


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _config(base: dict[str, Any], feature: dict[str, Any]) -> dict[str, Any]:
    overrides = feature.get("monitoringConfigOverrides") or feature.get("monitoring_config_overrides") or {}
    merged = {**base, **{k: v for k, v in overrides.items() if k != "distribution_constraints"}}
    merged["distribution_constraints"] = {
        **(base.get("distribution_constraints") or {}),
        **(overrides.get("distribution_constraints") or {}),
    }
    return merged


def _baseline_features(statistics: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in (statistics or {}).get("features", [])}


def check(
    constraints: dict[str, Any], statistics: dict[str, Any] | None, current: Analysis, width: int | None
) -> Outcome:
    out = Outcome()
    base_config = constraints.get("monitoring_config") or {}
    features = constraints.get("features", [])
    stats = _baseline_features(statistics)
    evaluate = base_config.get("evaluate_constraints", "Enabled") == "Enabled"
    if evaluate and width is not None and width != len(features) and current.item_count:
        kind = "missing" if width < len(features) else "extra"
        out.add(
            "",
            f"{kind}_column_check",
            f"There are {kind} columns in current dataset. Number of columns in current dataset: {width}, "
            f"Number of columns in baseline constraints: {len(features)}",
        )
    for feature in features:
        name, kind = feature["name"], feature.get("inferred_type", "Unknown")
        config = _config(base_config, feature)
        col = current.columns.get(name)
        if col is None or not current.item_count:
            continue
        completeness = col.present / current.item_count
        out.metrics[f"feature_non_null_{name}"] = completeness
        if kind in NUMERIC:
            share = col.integral_share() if kind == "Integral" else col.numeric_share()
            out.metrics[f"feature_data_{name}"] = share
        if config.get("evaluate_constraints", "Enabled") != "Enabled":
            continue
        _type_check(out, name, kind, col, float(config.get("datatype_check_threshold", 1.0)))
        expected = feature.get("completeness")
        if expected is not None and completeness + 1e-9 < float(expected):
            out.add(
                name,
                "completeness_check",
                f"Data completeness requirement is not met. Expected completeness: {_pct(float(expected))}. "
                f"Observed: Only {_pct(completeness)} of data is present.",
            )
        domains = (feature.get("string_constraints") or {}).get("domains")
        if domains and col.present:
            inside = sum(c for v, c in col.categories.items() if v in set(domains)) / col.present
            threshold = float(config.get("domain_content_threshold", 1.0))
            if inside < threshold:
                out.add(
                    name,
                    "categorical_values_check",
                    f"Data content requirement is not met. Expected: {_pct(threshold)} of data in the baseline "
                    f"domain. Observed: Only {_pct(inside)} of data is in the baseline domain.",
                )
        _drift_check(out, name, kind, col, stats.get(name), config["distribution_constraints"])
    return out


def _drift_text(distance: float, threshold: float) -> str:
    return f"Baseline drift distance: {distance:g} exceeds threshold: {threshold:g}"


def _type_check(out: Outcome, name: str, kind: str, col: ColumnStats, threshold: float) -> None:
    if kind not in NUMERIC or not col.present:
        return
    share = col.integral_share() if kind == "Integral" else col.numeric_share()
    if share + 1e-9 < threshold:
        out.add(
            name,
            "data_type_check",
            f"Data type match requirement is not met. Expected data type: {kind}, Expected match: "
            f"{_pct(threshold)}. Observed: Only {_pct(share)} of data is {kind}.",
        )


def _drift_check(
    out: Outcome, name: str, kind: str, col: ColumnStats, baseline: dict[str, Any] | None, dist: dict[str, Any]
) -> None:
    if baseline is None or dist.get("perform_comparison", "Enabled") != "Enabled":
        return
    threshold = float(dist.get("comparison_threshold", 0.1))
    if kind in NUMERIC and "numerical_statistics" in baseline and col.count:
        base_kll = baseline["numerical_statistics"].get("distribution", {}).get("kll", {})
        data = base_kll.get("sketch", {}).get("data") or []
        if not data:
            return
        distance = linf_distance(data, kll_levels(col))
        out.metrics[f"feature_baseline_drift_{name}"] = distance
        limit = threshold
        if dist.get("comparison_method", "Robust") == "Robust":
            n = baseline["numerical_statistics"]["common"]["num_present"]
            m = col.count
            limit = max(threshold, KS_ALPHA_FACTOR * math.sqrt((n + m) / (n * m))) if n and m else threshold
        if distance > limit:
            out.add(
                name, "baseline_drift_check", f"Baseline drift distance: {distance:g} exceeds threshold: {threshold:g}"
            )
    elif kind == "String" and "string_statistics" in baseline and col.present:
        buckets = baseline["string_statistics"].get("distribution", {}).get("categorical", {}).get("buckets", [])
        total = sum(b["count"] for b in buckets)
        if not total:
            return
        base = {b["value"]: b["count"] / total for b in buckets}
        seen = {v: c / col.present for v, c in col.categories.items()}
        cat_threshold = float(dist.get("categorical_comparison_threshold", threshold))
        if dist.get("categorical_drift_method", "LInfinity") == "ChiSquared":
            from scipy.stats import chisquare

            values = sorted(set(base) | set(seen))
            expected = [max(base.get(v, 0.0), 1e-9) * col.present for v in values]
            scale = sum(col.categories.values()) / sum(expected)
            p_value = float(chisquare([col.categories.get(v, 0) for v in values], [e * scale for e in expected])[1])
            out.metrics[f"feature_baseline_drift_{name}"] = p_value
            if p_value < cat_threshold:
                out.add(
                    name,
                    "baseline_drift_check",
                    f"Baseline drift p-value: {p_value:g} is below threshold: {cat_threshold:g}",
                )
            return
        distance = max(abs(base.get(v, 0.0) - seen.get(v, 0.0)) for v in set(base) | set(seen))
        out.metrics[f"feature_baseline_drift_{name}"] = distance
        if distance > cat_threshold:
            out.add(
                name,
                "baseline_drift_check",
                f"Baseline drift distance: {distance:g} exceeds threshold: {cat_threshold:g}",
            )
