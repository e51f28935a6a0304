"""constraints.json (reference 8.5) suggested from a baseline's statistics."""

from __future__ import annotations

from typing import Any

from modelhost.monitor.columns import ColumnStats

MAX_DOMAIN = 20  # a String feature with at most this many distinct values gets a domain constraint
MAX_DOMAIN_RATIO = 0.1  # ... when they are few relative to the rows (a categorical feature)


def feature_constraints(col: ColumnStats, item_count: int) -> dict[str, Any]:
    kind = col.inferred_type
    out: dict[str, Any] = {
        "name": col.name,
        "inferred_type": kind,
        "completeness": col.present / item_count if item_count else 1.0,
    }
    if kind in ("Integral", "Fractional"):
        out["num_constraints"] = {"is_non_negative": col.min >= 0}
    elif kind == "String":
        distinct = len(col.categories)
        if col.categories_complete and distinct <= MAX_DOMAIN and distinct <= max(1, col.present * MAX_DOMAIN_RATIO):
            out["string_constraints"] = {"domains": sorted(col.categories)}
    return out


def monitoring_config(categorical_drift_method: str = "LInfinity") -> dict[str, Any]:
    # What SageMaker's analyzer suggests (its baselines carry 1.0 for the two content thresholds:
    # every value must have the baseline's type / be in the domain).
    return {
        "evaluate_constraints": "Enabled",
        "emit_metrics": "Enabled",
        "datatype_check_threshold": 1.0,
        "domain_content_threshold": 1.0,
        "distribution_constraints": {
            "perform_comparison": "Enabled",
            "comparison_threshold": 0.1,
            "comparison_method": "Robust",
            "categorical_comparison_threshold": 0.1,
            "categorical_drift_method": categorical_drift_method,
        },
    }


def constraints_document(columns: list[ColumnStats], item_count: int, drift_method: str) -> dict[str, Any]:
    return {
        "version": 0,
        "features": [feature_constraints(c, item_count) for c in columns],
        "monitoring_config": monitoring_config(drift_method),
    }
