"""JSON 1.1 protocol helpers, validated against botocore's real "sagemaker" model."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.parsers import JSONParser, RestJSONParser

from modelhost import errors
from modelhost.server import awsjson
from modelhost.server.awsjson import (
    compile_pattern,
    decode_body,
    error_response,
    get_schema,
    json_response,
    parse_target,
    runtime_error_response,
    translate_java_pattern,
)

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
NAME_PATTERN = "[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
TAG_VALUE_PATTERN = r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*)"
PREFIX = "failed to satisfy constraint: Member must"


@pytest.fixture(scope="module")
def schema() -> awsjson.ServiceSchema:
    return get_schema("sagemaker")


def variant(**overrides: Any) -> dict[str, Any]:
    v: dict[str, Any] = {
        "VariantName": "AllTraffic",
        "ModelName": "my-model",
        "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1,
        "InitialVariantWeight": 1.0,
    }
    v.update(overrides)
    return v


def message_of(schema: awsjson.ServiceSchema, operation: str, params: dict[str, Any]) -> str:
    with pytest.raises(errors.ValidationException) as info:
        schema.validate(operation, params)
    assert info.value.code == "ValidationException"
    assert info.value.status == 400
    return info.value.message


# ---------------------------------------------------------------------------------- valid inputs


def test_schema_is_cached_and_knows_operations(schema: awsjson.ServiceSchema) -> None:
    assert get_schema("sagemaker") is schema
    assert schema.has_operation("CreateEndpoint")
    assert not schema.has_operation("CreateBanana")
    assert "InvokeEndpoint" not in schema.operation_names
    assert {"CreateModel", "DescribeEndpoint", "ListEndpoints"} <= schema.operation_names
    assert schema.target_prefix == "SageMaker"


def test_valid_inputs_pass(schema: awsjson.ServiceSchema) -> None:
    schema.validate(
        "CreateModel",
        {
            "ModelName": "my-model",
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {
                "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/img:latest",
                "ModelDataUrl": "s3://bucket/model.tar.gz",
                "Environment": {"SAGEMAKER_PROGRAM": "inference.py"},
            },
            "Tags": [{"Key": "team", "Value": "ml"}],
        },
    )
    schema.validate(
        "CreateEndpointConfig",
        {"EndpointConfigName": "my-config", "ProductionVariants": [variant(), variant(VariantName="b")]},
    )
    schema.validate("CreateEndpoint", {"EndpointName": "my-endpoint", "EndpointConfigName": "my-config"})
    schema.validate("ListEndpoints", {})
    schema.validate(
        "ListEndpoints",
        {
            "MaxResults": 100,
            "SortOrder": "Descending",
            "SortBy": "CreationTime",
            "CreationTimeAfter": 1700000000.5,
            "CreationTimeBefore": "2024-01-01T00:00:00Z",
        },
    )


def test_unknown_members_are_ignored(schema: awsjson.ServiceSchema) -> None:
    schema.validate(
        "CreateEndpoint",
        {"EndpointName": "e", "EndpointConfigName": "c", "NotAMember": {"x": [1, 2]}},
    )


def test_null_optional_member_is_treated_as_absent(schema: awsjson.ServiceSchema) -> None:
    schema.validate("CreateEndpoint", {"EndpointName": "e", "EndpointConfigName": "c", "Tags": None})


def test_operation_without_input_and_unknown_operation(schema: awsjson.ServiceSchema) -> None:
    app_autoscaling = get_schema("application-autoscaling")
    app_autoscaling.validate("DescribeScalableTargets", {"ServiceNamespace": "sagemaker", "MaxResults": 50})
    with pytest.raises(errors.UnknownOperationException):
        schema.validate("CreateBanana", {})
    with pytest.raises(errors.SerializationException):
        schema.validate("ListEndpoints", [])


# ---------------------------------------------------------------------------------- violations


def test_too_long_name_reports_length_and_pattern(schema: awsjson.ServiceSchema) -> None:
    name = "a" * 100
    assert message_of(schema, "CreateEndpoint", {"EndpointName": name, "EndpointConfigName": "c"}) == (
        f"2 validation errors detected: Value '{name}' at 'endpointName' {PREFIX} have length less than"
        f" or equal to 63; Value '{name}' at 'endpointName' {PREFIX} satisfy regular expression pattern:"
        f" {NAME_PATTERN}"
    )


def test_pattern_violation(schema: awsjson.ServiceSchema) -> None:
    assert message_of(schema, "CreateEndpoint", {"EndpointName": "bad_name!", "EndpointConfigName": "c"}) == (
        f"1 validation error detected: Value 'bad_name!' at 'endpointName' {PREFIX} satisfy regular"
        f" expression pattern: {NAME_PATTERN}"
    )


def test_pattern_is_a_full_match(schema: awsjson.ServiceSchema) -> None:
    # "ok-name" would match the pattern as a prefix of "ok-name_"; AWS requires the whole value.
    msg = message_of(schema, "CreateEndpoint", {"EndpointName": "ok-name_", "EndpointConfigName": "c"})
    assert msg.startswith("1 validation error detected: Value 'ok-name_' at 'endpointName'")


def test_empty_name_fails_only_the_pattern(schema: awsjson.ServiceSchema) -> None:
    # EndpointName has min 0 in the model, so only the pattern rejects "".
    assert message_of(schema, "DescribeEndpoint", {"EndpointName": ""}) == (
        f"1 validation error detected: Value '' at 'endpointName' {PREFIX} satisfy regular expression"
        f" pattern: {NAME_PATTERN}"
    )


def test_enum_in_list_item(schema: awsjson.ServiceSchema) -> None:
    msg = message_of(
        schema,
        "CreateEndpointConfig",
        {"EndpointConfigName": "c", "ProductionVariants": [variant(InstanceType="ml.fake.huge")]},
    )
    head = (
        f"1 validation error detected: Value 'ml.fake.huge' at 'productionVariants.1.member.instanceType'"
        f" {PREFIX} satisfy enum value set: [ml.t2.medium, ml.t2.large, "
    )
    assert msg.startswith(head)
    assert msg.endswith("]")
    listed = msg[msg.index("[") + 1 : -1].split(", ")
    model = schema.model.shape_for("ProductionVariantInstanceType")
    assert listed == model.enum


def test_required_member_missing(schema: awsjson.ServiceSchema) -> None:
    assert message_of(schema, "CreateEndpointConfig", {"EndpointConfigName": "c"}) == (
        f"1 validation error detected: Value null at 'productionVariants' {PREFIX} not be null"
    )
    # An explicit JSON null for a required member is just as missing.
    assert message_of(schema, "CreateEndpointConfig", {"EndpointConfigName": "c", "ProductionVariants": None}) == (
        f"1 validation error detected: Value null at 'productionVariants' {PREFIX} not be null"
    )


def test_numeric_maximum_and_enum_together(schema: awsjson.ServiceSchema) -> None:
    assert message_of(schema, "ListEndpoints", {"MaxResults": 1000}) == (
        f"1 validation error detected: Value '1000' at 'maxResults' {PREFIX} have value less than or equal to 100"
    )
    assert message_of(schema, "ListEndpoints", {"SortOrder": "Sideways"}) == (
        f"1 validation error detected: Value 'Sideways' at 'sortOrder' {PREFIX} satisfy enum value set:"
        " [Ascending, Descending]"
    )
    # Several violations: counted and joined with "; " in member order.
    assert message_of(schema, "ListEndpoints", {"SortOrder": "Sideways", "MaxResults": 0}) == (
        f"2 validation errors detected: Value 'Sideways' at 'sortOrder' {PREFIX} satisfy enum value set:"
        f" [Ascending, Descending]; Value '0' at 'maxResults' {PREFIX} have value greater than or equal to 1"
    )


def test_type_mismatch(schema: awsjson.ServiceSchema) -> None:
    assert message_of(
        schema,
        "CreateEndpointConfig",
        {"EndpointConfigName": "c", "ProductionVariants": [variant(InitialInstanceCount="2")]},
    ) == (
        "1 validation error detected: Value '2' at 'productionVariants.1.member.initialInstanceCount'"
        f" {PREFIX} be of type integer"
    )
    # JSON booleans are not integers, and numbers are not strings or structures.
    assert message_of(schema, "ListEndpoints", {"MaxResults": True, "NameContains": 5}) == (
        f"2 validation errors detected: Value 'true' at 'maxResults' {PREFIX} be of type integer;"
        f" Value '5' at 'nameContains' {PREFIX} be of type string"
    )
    assert message_of(schema, "CreateEndpointConfig", {"EndpointConfigName": "c", "ProductionVariants": {}}) == (
        f"1 validation error detected: Value '{{}}' at 'productionVariants' {PREFIX} be of type list"
    )
    assert message_of(schema, "ListEndpoints", {"CreationTimeAfter": "yesterday"}) == (
        f"1 validation error detected: Value 'yesterday' at 'creationTimeAfter' {PREFIX} be of type timestamp"
    )


def test_list_min_length_and_null_item(schema: awsjson.ServiceSchema) -> None:
    assert message_of(schema, "CreateEndpointConfig", {"EndpointConfigName": "c", "ProductionVariants": []}) == (
        f"1 validation error detected: Value '[]' at 'productionVariants' {PREFIX} have length greater than"
        " or equal to 1"
    )
    assert message_of(
        schema, "CreateEndpointConfig", {"EndpointConfigName": "c", "ProductionVariants": [variant(), None]}
    ) == (f"1 validation error detected: Value null at 'productionVariants.2.member' {PREFIX} not be null")


def test_tag_value_pattern_uses_unicode_properties(schema: awsjson.ServiceSchema) -> None:
    base = {"EndpointName": "e", "EndpointConfigName": "c"}
    schema.validate("CreateEndpoint", {**base, "Tags": [{"Key": "név", "Value": "héllo wörld 東京 ١٢"}]})
    assert message_of(
        schema,
        "CreateEndpoint",
        {
            **base,
            "Tags": [
                {
                    "Key": "k",
                    "Value": "ok",
                },
                {"Key": "k", "Value": "no!"},
            ],
        },
    ) == (
        f"1 validation error detected: Value 'no!' at 'tags.2.member.value' {PREFIX} satisfy regular"
        f" expression pattern: {TAG_VALUE_PATTERN}"
    )


def test_map_values_are_checked(schema: awsjson.ServiceSchema) -> None:
    params = {
        "ModelName": "m",
        "ExecutionRoleArn": ROLE,
        "PrimaryContainer": {"Image": "img", "Environment": {"GOOD": "x", "BAD": 7}},
    }
    assert message_of(schema, "CreateModel", params) == (
        f"1 validation error detected: Value '7' at 'primaryContainer.environment.BAD' {PREFIX} be of type string"
    )


def test_message_is_capped_and_values_truncated(schema: awsjson.ServiceSchema) -> None:
    tags = [{"Key": "k", "Value": "!" * 300} for _ in range(12)]
    msg = message_of(schema, "CreateEndpoint", {"EndpointName": "e", "EndpointConfigName": "c", "Tags": tags})
    # Each Value is 300 chars over a 256 max *and* fails the pattern: 24 violations, 10 shown.
    assert msg.startswith("24 validation errors detected: Value '" + "!" * 200 + "...' at 'tags.1.member.value'")
    assert msg.count("; ") == 9


# ---------------------------------------------------------------------------------- patterns


def test_java_pattern_translation() -> None:
    assert translate_java_pattern(r"\A\S[\p{Print}]*\z") == r"\A[^ \t\n\x0B\f\r][ -~]*\Z"
    assert translate_java_pattern(r"[\w-]+\d") == r"[a-zA-Z0-9_-]+[0-9]"
    supplementary = compile_pattern(r"[\u0020-\uD7FF\uE000-\uFFFD\uD800\uDC00-\uDBFF\uDFFF\t]*")
    assert supplementary is not None
    assert supplementary.fullmatch("emoji 😀\tok")
    assert not supplementary.fullmatch("bell \x07")
    printable = compile_pattern(r"\A\S[\p{Print}]*\z")
    assert printable is not None
    assert printable.fullmatch("model-a.tar.gz")
    assert not printable.fullmatch(" leading-space")
    assert not printable.fullmatch("trailing-newline\n")
    assert not printable.fullmatch("ünïcode")  # Java's \p{Print} is ASCII-only
    digits = compile_pattern(r"\d+")
    assert digits is not None and not digits.fullmatch("١٢")  # Java's \d is ASCII-only


def test_uncompilable_pattern_is_skipped() -> None:
    assert compile_pattern("([unclosed") is None
    assert compile_pattern("([unclosed") is None  # cached failure, still no exception


# ---------------------------------------------------------------------------------- output


def test_output_to_json_round_trips_through_botocore(schema: awsjson.ServiceSchema) -> None:
    created = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
    modified = datetime(2024, 5, 1, 12, 45, 0)  # naive: UTC
    result = {
        "EndpointName": "e",
        "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e",
        "EndpointConfigName": "c",
        "EndpointStatus": "InService",
        "CreationTime": created,
        "LastModifiedTime": modified,
        "ProductionVariants": [{"VariantName": "AllTraffic", "CurrentWeight": 1.0, "CurrentInstanceCount": 1}],
    }
    body = schema.output_to_json("DescribeEndpoint", result)
    raw = json.loads(body)
    assert raw["CreationTime"] == 1714566615.25
    assert raw["LastModifiedTime"] == 1714567500.0

    shape = schema.model.operation_model("DescribeEndpoint").output_shape
    parsed = JSONParser().parse({"body": body, "headers": {}, "status_code": 200}, shape)
    assert parsed["CreationTime"] == created
    assert parsed["LastModifiedTime"] == modified.replace(tzinfo=UTC)
    assert parsed["ProductionVariants"] == result["ProductionVariants"]
    assert parsed["EndpointStatus"] == "InService"


def test_dumps_encodes_bytes_as_base64() -> None:
    assert awsjson.dumps({"Body": b"\x00\xffhi", "n": None}) == b'{"Body":"AP9oaQ==","n":null}'


# ---------------------------------------------------------------------------------- wire helpers


def test_parse_target() -> None:
    assert parse_target("SageMaker.CreateModel") == ("SageMaker", "CreateModel")
    assert parse_target("AnyScaleFrontendService.DescribeScalableTargets") == (
        "AnyScaleFrontendService",
        "DescribeScalableTargets",
    )
    for bad in (None, "", "SageMaker", "SageMaker.", ".CreateModel"):
        with pytest.raises(errors.UnknownOperationException) as info:
            parse_target(bad)
        assert info.value.code == "UnknownOperationException"
        assert info.value.status == 400


def test_decode_body() -> None:
    assert decode_body(b"") == {}
    assert decode_body(b"  \n") == {}
    assert decode_body(b'{"EndpointName": "e"}') == {"EndpointName": "e"}
    for bad in (b"{not json", b"[1, 2]", b'"s"', b'{"a": NaN}', b"\xff\xfe"):
        with pytest.raises(errors.SerializationException) as info:
            decode_body(bad)
        assert info.value.code == "SerializationException"


def test_json_response_headers() -> None:
    resp = json_response(b'{"a":1}', "req-1")
    assert resp.status_code == 200
    assert resp.body == b'{"a":1}'
    assert resp.headers["content-type"] == "application/x-amz-json-1.1"
    assert resp.headers["x-amzn-requestid"] == "req-1"


def test_error_response_is_parsed_by_botocore() -> None:
    err = errors.ValidationException('Could not find endpoint "arn:aws:sagemaker:us-east-1:1:endpoint/x".')
    resp = error_response(err, "req-2")
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/x-amz-json-1.1"
    assert resp.headers["x-amzn-errortype"] == "ValidationException"
    assert resp.headers["x-amzn-requestid"] == "req-2"
    assert json.loads(bytes(resp.body)) == {"__type": "ValidationException", "message": err.message}
    parsed = JSONParser().parse(
        {"body": resp.body, "headers": dict(resp.headers), "status_code": resp.status_code}, None
    )
    assert parsed["Error"] == {"Code": "ValidationException", "Message": err.message}
    assert error_response(errors.InternalFailure("boom"), "r").status_code == 500


def test_runtime_error_response_is_parsed_by_botocore() -> None:
    err = errors.ModelError(
        'Received client error (400) from primary with message "bad".',
        original_status_code=400,
        original_message="bad",
        log_stream_arn="arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/e",
    )
    resp = runtime_error_response(err, "req-3")
    assert resp.status_code == 424
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-amzn-errortype"] == "ModelError"
    assert json.loads(bytes(resp.body)) == {
        "ErrorCode": "CLIENT_ERROR_FROM_MODEL",
        "Message": err.message,
        "OriginalStatusCode": 400,
        "OriginalMessage": "bad",
        "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/e",
    }
    parsed = RestJSONParser().parse(
        {"body": resp.body, "headers": dict(resp.headers), "status_code": resp.status_code}, None
    )
    assert parsed["Error"]["Code"] == "ModelError"
    assert parsed["Error"]["Message"] == err.message


# ---------------------------------------------------------------------------------- errors module


def test_error_bodies_and_statuses() -> None:
    assert errors.ResourceNotFound("gone", Extra=1).body() == {
        "__type": "ResourceNotFound",
        "message": "gone",
        "Extra": 1,
    }
    cases: list[tuple[errors.ApiError, str, int]] = [
        (errors.ValidationException("m"), "ValidationException", 400),
        (errors.ResourceInUse("m"), "ResourceInUse", 400),
        (errors.ResourceLimitExceeded("m"), "ResourceLimitExceeded", 400),
        (errors.UnknownOperationException("m"), "UnknownOperationException", 400),
        (errors.SerializationException("m"), "SerializationException", 400),
        (errors.InternalFailure("m"), "InternalFailure", 500),
        (errors.ValidationError("m"), "ValidationError", 400),
        (errors.ModelNotReadyException("m"), "ModelNotReadyException", 429),
        (errors.ServiceUnavailable("m"), "ServiceUnavailable", 503),
        (errors.RuntimeInternalFailure("m"), "InternalFailure", 500),
    ]
    for err, code, status in cases:
        assert (err.code, err.status) == (code, status)
    assert errors.ValidationError("Endpoint e of account 1 not found.").body() == {
        "Message": "Endpoint e of account 1 not found."
    }
    assert errors.ModelError("m", 503, "down", "arn").body()["ErrorCode"] == "SERVER_ERROR_FROM_MODEL"


def test_domain_errors_become_the_runtime_errors_and_texts() -> None:
    """The router raises domain errors; server/runtime.py words them as the service does."""
    from modelhost.hosting import errors as domain
    from modelhost.server.runtime import runtime_error

    err = runtime_error(domain.EndpointNotFound("nope"), "123456789012")
    assert (err.code, err.status) == ("ValidationError", 400)
    assert err.message == "Endpoint nope of account 123456789012 not found."
    err = runtime_error(domain.VariantNotFound("ep", "Zed", ("A", "B")), "1")
    assert err.message == "Variant Zed not found for Request to endpoint ep. Valid variants: A, B."
    err = runtime_error(domain.NoCapacity("ep", "A"), "1")
    assert (err.code, err.status) == ("ServiceUnavailable", 503)
    assert err.message == "No healthy instance of variant A of endpoint ep is available."
    err = runtime_error(domain.ModelFailed("ep", "A", 400, "bad", "arn:log"), "1")
    assert (err.code, err.status) == ("ModelError", 424)
    assert err.message == (
        'Received client error (400) from primary with message "bad". '
        "See the endpoint's logs (modelhost logs ep) for more information."
    )
    assert err.body() == {
        "ErrorCode": "CLIENT_ERROR_FROM_MODEL",
        "Message": err.message,
        "OriginalStatusCode": 400,
        "OriginalMessage": "bad",
        "LogStreamArn": "arn:log",
    }
    err = runtime_error(domain.ModelTimedOut("ep", "A", 2.5, "arn:log"), "1")
    assert err.message.startswith('Received server error (0) from primary with message "Your invocation timed out')
    assert err.body()["OriginalMessage"].endswith("(timeout: 2.5s)")
    assert err.body()["ErrorCode"] == "SERVER_ERROR_FROM_MODEL"
    err = runtime_error(domain.ModelLost("ep", "A", "connection reset", "arn:log"), "1")
    assert err.body()["OriginalMessage"] == "The container primary failed: connection reset."


def test_a_lone_surrogate_is_a_serialization_error_and_errors_still_encode() -> None:
    # found by the fuzz suite: {"ModelName":"\ud800"} answered a plain-text 500
    from modelhost.server.json_wire import decode_body, dumps

    with pytest.raises(errors.SerializationException, match="unpaired UTF-16 surrogate"):
        decode_body(b'{"ModelName":"\\ud800"}')
    assert decode_body(b'{"ModelName":"\\ud83d\\ude00"}') == {"ModelName": "\U0001f600"}  # a pair is a character
    out = dumps({"message": "bad \ud800 value"})  # an error echoing such a value is still valid UTF-8 JSON
    assert json.loads(out.decode("utf-8")) == {"message": "bad \ud800 value"}
