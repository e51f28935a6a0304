"""The built-in analyzer on hand-checked small datasets (types, completeness, statistics, domains, drift,
the violation checks in SageMaker's words) and against numpy/pandas on a larger one."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from modelhost.monitor.analysis import Analysis
from modelhost.monitor.job import run
from modelhost.monitor.readers import Chunk

CSV = '{"csv": {"header": true, "output_columns_position": "START"}}'


def baseline(tmp_path: Path, text: str, header: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    src = tmp_path / "in"
    src.mkdir(exist_ok=True)
    (src / "data.csv").write_text(text)
    out = tmp_path / "out"
    fmt = json.dumps({"csv": {"header": header}})
    n, message = run({"dataset_format": fmt, "dataset_source": str(src), "output_path": str(out)})
    assert n == 0 and message.startswith("Completed")
    return json.loads((out / "statistics.json").read_text()), json.loads((out / "constraints.json").read_text())


def capture_line(data: str, output: str = "1.0", when: str = "2026-12-01T10:15:00Z", encoding: str = "CSV") -> str:
    return json.dumps(
        {
            "captureData": {
                "endpointInput": {
                    "observedContentType": "text/csv",
                    "mode": "INPUT",
                    "data": data,
                    "encoding": encoding,
                },
                "endpointOutput": {
                    "observedContentType": "text/csv",
                    "mode": "OUTPUT",
                    "data": output,
                    "encoding": "CSV",
                },
            },
            "eventMetadata": {"eventId": "e", "inferenceTime": when},
            "eventVersion": "0",
        }
    )


def monitor(tmp_path: Path, stats: dict, constraints: dict, lines: list[str], **env: str) -> list[dict[str, str]]:
    base = tmp_path / "baseline"
    base.mkdir(exist_ok=True)
    (base / "statistics.json").write_text(json.dumps(stats))
    (base / "constraints.json").write_text(json.dumps(constraints))
    cap = tmp_path / "capture" / "ep" / "AllTraffic" / "2026" / "12" / "01" / "10"
    cap.mkdir(parents=True, exist_ok=True)
    (cap / "15-00-000-x.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "mout"
    run(
        {
            "dataset_format": '{"sagemakerCaptureJson": {"captureIndexNames": ["endpointInput", "endpointOutput"]}}',
            "dataset_source": str(tmp_path / "capture"),
            "output_path": str(out),
            "baseline_statistics": str(base / "statistics.json"),
            "baseline_constraints": str(base / "constraints.json"),
            "start_time": "2026-12-01T10:00:00Z",
            "end_time": "2026-12-01T11:00:00Z",
            **env,
        }
    )
    return list(json.loads((out / "constraint_violations.json").read_text())["violations"])


def test_inferred_types_completeness_and_statistics(tmp_path: Path) -> None:
    stats, constraints = baseline(tmp_path, "y,a,b,c,d\n1,1,1.5,x,\n2,2,2,y,\n3,,3,x,\n4,4,-1,x,\n")
    feats = {f["name"]: f for f in stats["features"]}
    assert stats["dataset"]["item_count"] == 4
    assert [feats[n]["inferred_type"] for n in "yabcd"] == ["Integral", "Integral", "Fractional", "String", "Unknown"]
    y = feats["y"]["numerical_statistics"]
    assert y["common"] == {"num_present": 4, "num_missing": 0}
    assert (y["mean"], y["sum"], y["min"], y["max"]) == (2.5, 10.0, 1.0, 4.0)
    assert y["std_dev"] == pytest.approx(math.sqrt(1.25))  # population standard deviation
    kll = y["distribution"]["kll"]
    assert len(kll["buckets"]) == 10 and sum(b["count"] for b in kll["buckets"]) == pytest.approx(4)
    assert kll["buckets"][0]["lower_bound"] == 1.0 and kll["buckets"][-1]["upper_bound"] == 4.0
    assert kll["sketch"]["parameters"] == {"c": 0.64, "k": 2048.0} and kll["sketch"]["data"] == [[1.0, 2.0, 3.0, 4.0]]
    assert feats["a"]["numerical_statistics"]["common"] == {"num_present": 3, "num_missing": 1}
    c = feats["c"]["string_statistics"]
    assert c["distinct_count"] == 2.0
    assert c["distribution"]["categorical"]["buckets"] == [{"value": "x", "count": 3}, {"value": "y", "count": 1}]
    cons = {f["name"]: f for f in constraints["features"]}
    assert cons["a"]["completeness"] == 0.75 and cons["y"]["completeness"] == 1.0
    assert cons["b"]["num_constraints"] == {"is_non_negative": False}
    assert cons["y"]["num_constraints"] == {"is_non_negative": True}
    assert constraints["monitoring_config"]["distribution_constraints"]["comparison_threshold"] == 0.1
    assert constraints["monitoring_config"]["datatype_check_threshold"] == 1.0


def test_domains_for_small_cardinality_and_no_header(tmp_path: Path) -> None:
    rows = "".join(f"{i},{'abc'[i % 3]}\n" for i in range(60))
    stats, constraints = baseline(tmp_path, rows, header=False)
    assert [f["name"] for f in stats["features"]] == ["_c0", "_c1"]
    assert constraints["features"][1]["string_constraints"] == {"domains": ["a", "b", "c"]}
    assert "string_constraints" not in constraints["features"][0]


def test_strings_after_the_first_chunk_are_counted_from_the_start() -> None:
    chunks = [
        Chunk(["v"], [pa.array(["1", "2", "2"])], 3),
        Chunk(["v"], [pa.array(["z", "2", None])], 3),
    ]
    analysis = Analysis().run(lambda: iter(chunks))
    col = analysis.columns["v"]
    assert col.inferred_type == "String"
    assert col.categories == {"1": 1, "2": 3, "z": 1}
    assert (col.present, col.missing, col.integral, col.strings) == (5, 1, 4, 1)


def test_data_type_completeness_and_column_checks(tmp_path: Path) -> None:
    stats, constraints = baseline(tmp_path, "y,a,b\n" + "".join(f"{i}.5,{i % 2},{i}\n" for i in range(50)))
    # the output first (START), then the input a,b: a fractional a in 3 of 4 records, b missing in 1
    lines = [capture_line("0.5,1"), capture_line("0.5,2"), capture_line("1,"), capture_line("0.25,4")]
    violations = monitor(tmp_path, stats, constraints, lines)
    assert {
        "feature_name": "a",
        "constraint_check_type": "data_type_check",
        "description": "Data type match requirement is not met. Expected data type: Integral, Expected match: "
        "100.0%. Observed: Only 25.0% of data is Integral.",
    } in violations
    assert {
        "feature_name": "b",
        "constraint_check_type": "completeness_check",
        "description": "Data completeness requirement is not met. Expected completeness: 100.0%. "
        "Observed: Only 75.0% of data is present.",
    } in violations
    assert not [v for v in violations if v["feature_name"] == "y" and v["constraint_check_type"] == "data_type_check"]
    extra = monitor(tmp_path, stats, constraints, [capture_line("1,2,3")])
    assert [v["constraint_check_type"] for v in extra if "column" in v["constraint_check_type"]] == [
        "extra_column_check"
    ]
    assert (
        "Number of columns in current dataset: 4, Number of columns in baseline constraints: 3"
        in extra[0]["description"]
    )
    missing = monitor(tmp_path, stats, constraints, [capture_line("1")])
    assert [v["constraint_check_type"] for v in missing if "column" in v["constraint_check_type"]] == [
        "missing_column_check"
    ]


def test_records_outside_the_window_and_other_encodings(tmp_path: Path) -> None:
    stats, constraints = baseline(tmp_path, "y,a,b\n" + "".join(f"{i}.5,{i % 2},{i}\n" for i in range(50)))
    b64 = base64.b64encode(b"1,2").decode()
    lines = [
        capture_line("0.5,0.5", when="2026-12-01T09:59:59Z"),  # before the window: ignored
        capture_line(b64, encoding="BASE64"),
        capture_line("[1, 3]", encoding="JSON"),
    ]
    assert not [
        v for v in monitor(tmp_path, stats, constraints, lines) if v["constraint_check_type"] != "baseline_drift_check"
    ]


def test_record_preprocessor_script(tmp_path: Path) -> None:
    stats, constraints = baseline(tmp_path, "y,a,b\n" + "".join(f"{i}.5,{i % 2},{i}\n" for i in range(50)))
    script = tmp_path / "pre.py"
    script.write_text(
        "def preprocess_handler(inference_record):\n"
        "    a, b = inference_record.endpoint_input.data.split(';')\n"
        "    return {'y': inference_record.endpoint_output.data, 'a': a, 'b': b}\n"
    )
    violations = monitor(
        tmp_path,
        stats,
        constraints,
        [capture_line("1;2"), capture_line("0.5;3")],
        record_preprocessor_script=str(script),
    )
    types = [(v["feature_name"], v["constraint_check_type"]) for v in violations]
    assert ("a", "data_type_check") in types and ("b", "data_type_check") not in types


def test_categorical_values_and_baseline_drift(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = "".join(f"{v:.4f},{'xyz'[i % 3]}\n" for i, v in enumerate(rng.normal(0, 1, 300)))
    stats, constraints = baseline(tmp_path, "y,c\n" + rows)
    assert constraints["features"][1]["string_constraints"]["domains"] == ["x", "y", "z"]
    same = [capture_line("x", output=f"{v:.4f}") for v in rng.normal(0, 1, 200)]
    assert [v for v in monitor(tmp_path, stats, constraints, same) if v["feature_name"] == "y"] == []
    shifted = [capture_line("w" if i % 2 else "x", output=f"{v:.4f}") for i, v in enumerate(rng.normal(3, 1, 200))]
    violations = monitor(tmp_path, stats, constraints, shifted)
    drift = [v for v in violations if v["constraint_check_type"] == "baseline_drift_check" and v["feature_name"] == "y"]
    assert len(drift) == 1 and drift[0]["description"].startswith("Baseline drift distance: ")
    assert float(drift[0]["description"].split()[3]) > 0.8
    assert {
        "feature_name": "c",
        "constraint_check_type": "categorical_values_check",
        "description": "Data content requirement is not met. Expected: 100.0% of data in the baseline domain. "
        "Observed: Only 50.0% of data is in the baseline domain.",
    } in violations


def test_statistics_match_numpy_and_pandas(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 200_000
    frame = pd.DataFrame(
        {
            "normal": rng.normal(5, 2, n),
            "expo": rng.exponential(3, n),
            "ints": rng.integers(-50, 50, n),
            "gappy": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(0, 1, n)),
        }
    )
    src = tmp_path / "in"
    src.mkdir()
    frame.to_csv(src / "big.csv", index=False)
    run({"dataset_format": CSV, "dataset_source": str(src), "output_path": str(tmp_path / "out")})
    stats = {f["name"]: f for f in json.loads((tmp_path / "out" / "statistics.json").read_text())["features"]}
    back = pd.read_csv(src / "big.csv")  # what the file holds (the CSV rounds floats)
    assert stats["ints"]["inferred_type"] == "Integral" and stats["normal"]["inferred_type"] == "Fractional"
    for name in frame:
        num = stats[name]["numerical_statistics"]
        col = back[name].dropna()
        assert num["common"] == {"num_present": len(col), "num_missing": int(back[name].isna().sum())}
        assert num["mean"] == pytest.approx(col.mean(), rel=1e-9)
        assert num["sum"] == pytest.approx(col.sum(), rel=1e-9)
        assert num["std_dev"] == pytest.approx(col.std(ddof=0), rel=1e-9)
        assert (num["min"], num["max"]) == (col.min(), col.max())
        # the KLL buckets against an exact histogram over the same 10 bins: within the sketch's rank error
        edges = [b["lower_bound"] for b in num["distribution"]["kll"]["buckets"]] + [num["max"]]
        exact, _ = np.histogram(col, bins=edges)
        counts = np.array([b["count"] for b in num["distribution"]["kll"]["buckets"]])
        assert np.abs(np.cumsum(counts) - np.cumsum(exact)).max() / len(col) < 0.01


def test_post_analytics_processor_script(tmp_path: Path) -> None:
    stats, constraints = baseline(tmp_path, "y,a\n1.5,1\n2.5,2\n")
    marker = tmp_path / "post-ran"
    script = tmp_path / "post.py"
    script.write_text(f"def postprocess_handler():\n    open({str(marker)!r}, 'w').write('done')\n")
    monitor(tmp_path, stats, constraints, [capture_line("1")], post_analytics_processor_script=str(script))
    assert marker.read_text() == "done"
