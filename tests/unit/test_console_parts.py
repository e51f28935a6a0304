"""Pure parts of the console and export: session cookies, metric windows, chart rendering, the capacity
form, secret masking, instance sizing."""

from __future__ import annotations

import pytest
from starlette.datastructures import ImmutableMultiDict

from modelhost.console.actions import capacity_request
from modelhost.console.charts import Line, svg_chart
from modelhost.console.pages import MASK, masked
from modelhost.console.series import Point, Totals, delta_point, quantile
from modelhost.errors import ApiError
from modelhost.export.sizing import Size, fargate_size, instance_size
from modelhost.security.credentials import parse_credentials
from modelhost.security.sessions import Sessions, server_secret

KEYS = """
[admin]
aws_access_key_id = AKIDADMIN
aws_secret_access_key = s3cret
"""


def sessions(clock: list[float], text: str = KEYS) -> Sessions:
    return Sessions(parse_credentials(text, "123456789012"), b"k" * 32, lifetime=60, clock=lambda: clock[0])


def test_session_cookie_round_trip_and_refusals() -> None:
    now = [1000.0]
    s = sessions(now)
    assert s.login("AKIDADMIN", "wrong") is None and s.login("AKIDNOBODY", "s3cret") is None
    cookie = s.login("AKIDADMIN", "s3cret")
    assert cookie is not None
    key = s.verify(cookie)
    assert key is not None and key.name == "admin"
    access, expiry, mac = cookie.split(".")
    assert s.verify(f"{access}.{int(expiry) + 1000}.{mac}") is None  # a longer life is a forgery
    assert s.verify(f"{access}.{expiry}.{'0' * len(mac)}") is None
    assert s.verify("junk") is None and s.verify(None) is None
    other = Sessions(s.keyring, b"x" * 32, clock=lambda: now[0])
    assert other.verify(cookie) is None  # another server's secret
    rotated = sessions(now, KEYS.replace("s3cret", "new-secret"))
    assert rotated.verify(cookie) is None  # the key's secret changed
    now[0] += 61
    assert s.verify(cookie) is None  # expired


def test_server_secret_is_kept_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "console-session.key"
    first = server_secret(path)
    assert len(first) == 32 and server_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600


def test_quantile_interpolates_within_buckets() -> None:
    buckets = [(100.0, 0.0), (200.0, 50.0), (400.0, 100.0), (float("inf"), 100.0)]
    assert quantile(buckets, 0.5) == 200.0
    assert quantile(buckets, 0.75) == 300.0
    assert quantile([(100.0, 0.0), (float("inf"), 0.0)], 0.5) is None


def test_delta_point_is_per_interval() -> None:
    old = Totals(
        {"invocations": 10.0},
        {"model_latency": {1000.0: 10.0, float("inf"): 10.0}},
        {"overhead_latency": 50.0},
        {"overhead_latency": 10.0},
    )
    new = Totals(
        {"invocations": 14.0, "errors_5xx": 1.0},
        {"model_latency": {1000.0: 10.0, 2000.0: 14.0, float("inf"): 14.0}},
        {"overhead_latency": 450.0},
        {"overhead_latency": 14.0},
    )
    p = delta_point(5.0, new, old)
    assert (p.invocations, p.errors_5xx, p.errors_4xx) == (4.0, 1.0, 0.0)
    assert p.overhead_ms == pytest.approx(0.1)  # (450-50) µs over 4 requests


def test_chart_is_an_accessible_svg() -> None:
    html = svg_chart("Invocations", "", [Line("per 5 s", [(100.0, 3.0), (105.0, None), (110.0, 5.0)], "s1")], now=120.0)
    assert 'role="img"' in html and "per 5 s 5" in html and html.count("<polyline") == 1
    assert "<script" not in svg_chart("<script>", "", [], now=1.0)


def test_capacity_form() -> None:
    form = ImmutableMultiDict([("weight:A", "0.5"), ("count:A", ""), ("count:B", "3"), ("other", "x")])
    assert capacity_request("ep", form) == {
        "EndpointName": "ep",
        "DesiredWeightsAndCapacities": [
            {"VariantName": "A", "DesiredWeight": 0.5},
            {"VariantName": "B", "DesiredInstanceCount": 3},
        ],
    }
    with pytest.raises(ApiError, match="instance count of variant B must be a number"):
        capacity_request("ep", ImmutableMultiDict([("count:B", "many")]))


def test_secrets_are_masked() -> None:
    env = {"HF_API_TOKEN": "t", "DB_PASSWORD": "p", "AWS_SECRET_ACCESS_KEY": "s", "HF_TASK": "fill-mask"}
    assert dict(masked(env)) == {
        "HF_API_TOKEN": MASK,
        "DB_PASSWORD": MASK,
        "AWS_SECRET_ACCESS_KEY": MASK,
        "HF_TASK": "fill-mask",
    }


def test_instance_sizes_and_fargate_fit() -> None:
    assert instance_size("ml.m5.xlarge") == Size(4, 16384)
    assert instance_size("ml.c5.2xlarge") == Size(8, 16384)
    assert instance_size("ml.t2.medium") == Size(2, 4096)
    assert instance_size("ml.g4dn.xlarge") == Size(4, 16384)
    assert instance_size("nonsense") == Size(2, 8192)
    assert fargate_size(Size(2, 8192)) == (2048, 8192)
    assert fargate_size(Size(4, 65536)) == (4096, 30720)  # capped at what 4 vCPU allow
    assert fargate_size(Size(96, 786432)) == (16384, 122880)
    assert fargate_size(Size(2, 1024)) == (2048, 4096)  # raised to the minimum


def test_point_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Point(0, 0, 0, 0, None, None, None).at = 1  # type: ignore[misc]
