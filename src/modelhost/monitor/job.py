"""The analyzer container's contract (reference 8.3): environment variables in, JSON files out.

Without baseline constraints it is a baselining job: ``statistics.json`` and ``constraints.json``.
With them (a monitoring run) it writes ``statistics.json`` and ``constraint_violations.json``, and,
when ``publish_cloudwatch_metrics`` is Enabled, the per-feature metrics under
``/opt/ml/output/metrics/cloudwatch``. The status line goes to ``/opt/ml/output/message``
("CompletedWithViolations: ..." is what turns an execution CompletedWithViolations) and a failure
reason to ``/opt/ml/output/failure``. ``/opt/ml`` is under ``MODELHOST_PROCESSING_ROOT`` when set
(the processing job runner's per-job root).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from modelhost.monitor.analysis import Analysis
from modelhost.monitor.capture import Row, capture_rows, load_preprocessor, parse_time
from modelhost.monitor.constraints import constraints_document
from modelhost.monitor.readers import DatasetError, TypeConflict, open_dataset, rows_to_chunks
from modelhost.monitor.statistics import statistics_document
from modelhost.monitor.violations import check

SUPPORTED_ANALYSIS = ("", "DATA_QUALITY")


def ml_path(path: str) -> Path:
    root = os.environ.get("MODELHOST_PROCESSING_ROOT", "")
    return Path(root + path) if root else Path(path)


def _json_env(env: Mapping[str, str], name: str) -> dict[str, Any]:
    try:
        value = json.loads(env[name])
    except KeyError:
        raise DatasetError(f"The environment variable {name} is required.") from None
    except ValueError:
        raise DatasetError(f"The environment variable {name} is not JSON: {env[name]}") from None
    if not isinstance(value, dict):
        raise DatasetError(f"The environment variable {name} must be a JSON object.")
    return value


def _load(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.json"))
        if not found:
            raise DatasetError(f"No baseline file in {path}.")
        p = found[0]
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"The baseline file {path} cannot be read: {exc}") from None


def run(env: Mapping[str, str]) -> tuple[int, str]:
    """Run the analysis; returns (number of violations, message)."""
    analysis_type = env.get("analysis_type", "").upper()
    if analysis_type not in SUPPORTED_ANALYSIS:
        raise DatasetError(f"analysis_type {analysis_type} is not supported by modelhost's analyzer (DATA_QUALITY).")
    fmt = _json_env(env, "dataset_format")
    source = Path(env.get("dataset_source", "/opt/ml/processing/input"))
    output = Path(env.get("output_path", "/opt/ml/processing/output"))
    output.mkdir(parents=True, exist_ok=True)
    constraints = _load(env.get("baseline_constraints"))
    statistics = _load(env.get("baseline_statistics"))
    names = [f["name"] for f in constraints.get("features", [])] if constraints else None
    width: int | None = None
    if "sagemakerCaptureJson" in fmt:
        spec = fmt["sagemakerCaptureJson"] or {}
        start = parse_time(env["start_time"]) if env.get("start_time") else None
        end = parse_time(env["end_time"]) if env.get("end_time") else None
        preprocess = load_preprocessor(env.get("record_preprocessor_script"))
        index_names = spec.get("captureIndexNames") or ["endpointInput", "endpointOutput"]
        output_first = env.get("output_columns_position", "START").upper() != "END"
        widths: list[int] = [0]

        def rows() -> Iterator[Row]:
            for row in capture_rows(source, index_names, start, end, preprocess, output_first):
                widths[0] = max(widths[0], len(row))
                yield row

        analysis = Analysis(names).run(lambda: rows_to_chunks(rows(), names))
        if not analysis.item_count:
            raise DatasetError(f"No captured data in the analysis window under {source} (start {start}, end {end}).")
        width = widths[0]
    elif constraints is None:  # a baseline: Arrow's typed parser first, strings if a value does not fit
        try:
            analysis = Analysis().run(open_dataset(fmt, source, typed=True))
        except TypeConflict:
            analysis = Analysis().run(open_dataset(fmt, source))
    else:
        analysis = Analysis(names).run(open_dataset(fmt, source))
        if names is not None:
            width = len(analysis.columns)
    stats_doc = statistics_document(analysis.ordered(), analysis.item_count)
    (output / "statistics.json").write_text(json.dumps(stats_doc))
    if constraints is None:
        drift = env.get("categorical_drift_method", "LInfinity")
        doc = constraints_document(analysis.ordered(), analysis.item_count, drift)
        (output / "constraints.json").write_text(json.dumps(doc, indent=2))
        _post_analytics(env)
        return 0, "Completed: Job completed successfully with no violations."
    outcome = check(constraints, statistics, analysis, width)
    (output / "constraint_violations.json").write_text(json.dumps({"violations": outcome.violations}, indent=2))
    emit = (constraints.get("monitoring_config") or {}).get("emit_metrics", "Enabled") == "Enabled"
    if env.get("publish_cloudwatch_metrics", "Disabled") == "Enabled" and emit:
        _write_metrics(env, outcome.metrics)
    _post_analytics(env)
    n = len(outcome.violations)
    if n:
        return n, f"CompletedWithViolations: Job completed successfully with {n} violations."
    return 0, "Completed: Job completed successfully with no violations."


def _write_metrics(env: Mapping[str, str], metrics: dict[str, float]) -> None:
    directory = ml_path("/opt/ml/output/metrics/cloudwatch")
    directory.mkdir(parents=True, exist_ok=True)
    dims = {
        "Endpoint": env.get("sagemaker_endpoint_name", ""),
        "MonitoringSchedule": env.get("sagemaker_monitoring_schedule_name", ""),
    }
    lines = [json.dumps({"MetricName": k, "Value": v, "Dimensions": dims}) for k, v in sorted(metrics.items())]
    (directory / "metrics.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""))


def _post_analytics(env: Mapping[str, str]) -> None:
    path = env.get("post_analytics_processor_script")
    if not path:
        return
    spec = importlib.util.spec_from_file_location("post_analytics_processor", path)
    if spec is None or spec.loader is None:
        raise DatasetError(f"post_analytics_processor_script {path} cannot be loaded.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, "postprocess_handler", None)
    if handler is not None:
        handler()


def main() -> int:
    message_file = ml_path("/opt/ml/output/message")
    message_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        _n, message = run(os.environ)
    except DatasetError as exc:
        ml_path("/opt/ml/output/failure").write_text(f"ClientError: {exc}")
        print(f"ClientError: {exc}", file=sys.stderr)
        return 1
    message_file.write_text(message)
    print(message)
    return 0
