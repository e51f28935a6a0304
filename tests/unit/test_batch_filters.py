"""DataProcessing: the JSONPath subset with SageMaker's rules, joins, output filters, inference ids
(examples from the reference, section 3.4, and the AWS guide's join/filter page)."""

from __future__ import annotations

import json

import pytest

from modelhost.jobs.filters import DataProcessing, FilterError, JsonPath, check_path


@pytest.mark.parametrize(
    ("expr", "value", "expected"),
    [
        ("$", [1, 2, 3], [1, 2, 3]),
        ("$[1:]", ["id", "a", "b"], ["a", "b"]),
        ("$[1:4]", list(range(8)), [1, 2, 3, 4]),  # inclusive end: the 2nd to the 5th column
        ("$[0,-1]", ["id", "a", "b", "pred"], ["id", "pred"]),
        ("$[-1]", ["a", "b"], "b"),
        ("$[:1]", ["a", "b", "c"], ["a", "b"]),
        ("$.features", {"id": 1, "features": [1, 2]}, [1, 2]),
        (
            "$['id','SageMakerOutput']",
            {"id": 1, "x": 2, "SageMakerOutput": {"p": 0.5}},
            {"id": 1, "SageMakerOutput": {"p": 0.5}},
        ),
        ("$.SageMakerOutput.label", {"SageMakerOutput": {"label": "pos", "score": 1}}, "pos"),
        ("$.*", {"a": 1, "b": 2}, [1, 2]),
        ("$[*]", [1, 2], [1, 2]),
    ],
)
def test_jsonpath_subset(expr: str, value: object, expected: object) -> None:
    assert JsonPath(expr).apply(value) == expected


def test_out_of_range_and_unsupported_paths() -> None:
    with pytest.raises(FilterError, match="index 5 is out of range for a record of 3 elements"):
        JsonPath("$[5]").apply([1, 2, 3])
    with pytest.raises(FilterError, match="out of range"):
        JsonPath("$[1:7]").apply([1, 2, 3])
    with pytest.raises(FilterError, match="no member 'missing'"):
        JsonPath("$.missing").apply({"a": 1})
    assert check_path("$..a") is not None and "Descendants" in str(check_path("$..a"))
    assert check_path("$[?(@.a > 1)]") is not None
    assert check_path("a.b") is not None
    assert check_path("$['a','b']") is None


def test_csv_join_with_input_and_output_filters() -> None:
    """The guide's CSV example: drop the ID column for the model, join, keep ID and prediction."""
    dp = DataProcessing(
        {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"}, "text/csv", "text/csv", "Line"
    )
    sent, original = dp.input_record(b"id-7,1.5,2.5,3.5\n")
    assert sent == b"1.5,2.5,3.5\n" and original == ["id-7", "1.5", "2.5", "3.5"]
    (out,) = dp.output_records(b"0.93\n", 1, "text/csv")
    assert dp.output_record(original, out, "text/csv") == b"id-7,0.93"


def test_csv_join_appends_all_output_columns() -> None:
    dp = DataProcessing({"JoinSource": "Input"}, "text/csv", "text/csv", "Line")
    _, original = dp.input_record(b"1,2,3\n")
    (out,) = dp.output_records(b"1\n", 1, None)
    assert dp.output_record(original, out, None) == b"1,2,3,1"
    # several records answered in one response: one output line per record
    outs = dp.output_records(b"0.1\n0.2\n0.3\n", 3, "text/csv")
    assert outs == [["0.1"], ["0.2"], ["0.3"]]
    with pytest.raises(FilterError, match="2 lines for 3 records"):
        dp.output_records(b"0.1\n0.2\n", 3, "text/csv")


def test_json_join_uses_sagemaker_output_and_sagemaker_input() -> None:
    dp = DataProcessing(
        {"InputFilter": "$.features", "JoinSource": "Input", "OutputFilter": "$['id','SageMakerOutput']"},
        "application/jsonlines",
        "application/json",
        "Line",
    )
    sent, original = dp.input_record(b'{"id": 3, "features": [1, 2]}\n')
    assert json.loads(sent) == [1, 2]
    outs = dp.output_records(b"[0.25, 0.75]", 2, "application/json")
    assert outs == [0.25, 0.75]
    assert json.loads(dp.output_record(original, outs[0], None)) == {"id": 3, "SageMakerOutput": 0.25}
    plain = DataProcessing({"JoinSource": "Input"}, "application/json", "application/json", "Line")
    _, original = plain.input_record(b"[1, 2]\n")
    joined = json.loads(plain.output_record(original, {"p": 1}, None))
    assert joined == {"SageMakerInput": [1, 2], "SageMakerOutput": {"p": 1}}


def test_output_filter_out_of_range_is_an_error() -> None:
    dp = DataProcessing({"JoinSource": "Input", "OutputFilter": "$[9]"}, "text/csv", "text/csv", "Line")
    _, original = dp.input_record(b"1,2\n")
    with pytest.raises(FilterError, match="out of range"):
        dp.output_record(original, ["0.5"], None)


def test_generate_inference_id_columns_and_keys() -> None:
    dp = DataProcessing(
        None, "text/csv", "text/csv", "Line", generate_inference_id=True, job_start="2024-01-02T03:04:05Z"
    )
    assert dp.active
    line = dp.output_record(None, ["0.5"], "text/csv").decode()
    value, rid, when = line.split(",")
    assert value == "0.5" and len(rid) == 36 and when == "2024-01-02T03:04:05Z"
    dj = DataProcessing(None, "application/json", "application/json", "Line", generate_inference_id=True, job_start="T")
    doc = json.loads(dj.output_record(None, {"label": "x"}, None))
    assert doc["label"] == "x" and doc["SageMakerInferenceTime"] == "T" and len(doc["SageMakerInferenceId"]) == 36
    assert not DataProcessing(None, "text/csv", None, "Line").active
