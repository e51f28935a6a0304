"""The console's fragments render what DescribeEndpoint says during a blue/green update and for
serverless variants (rendered with the real templates, no server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelhost.console.app import Console


class NoBackend:
    logs_dir = Path("/nonexistent")
    audit_path = None
    secured = False

    async def call(self, *args: Any) -> dict[str, Any]:
        raise AssertionError("not called")

    async def invoke(self, *args: Any) -> Any:
        raise AssertionError("not called")

    def login(self, access_key: str, secret_key: str) -> str | None:
        return None

    def who(self, scope: Any) -> str | None:
        return None

    def operations(self) -> set[str]:
        return {"ListProcessingJobs"}


def test_blue_green_progress_is_shown_step_by_step() -> None:
    console = Console(NoBackend())
    desc = {
        "EndpointName": "ep",
        "EndpointStatus": "Updating",
        "EndpointConfigName": "blue",
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "CurrentWeight": 0.8,
                "DesiredWeight": 1.0,
                "CurrentInstanceCount": 2,
                "DesiredInstanceCount": 2,
                "DeployedImages": [{"SpecifiedImage": "modelhost/sklearn"}],
            }
        ],
    }
    pending = {
        "EndpointConfigName": "green",
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "DesiredInstanceCount": 2,
                "InstanceType": "ml.m5.large",
                "VariantStatus": [
                    {"Status": "Creating"},
                    {"Status": "ActivatingTraffic", "StatusMessage": "canary 20%"},
                ],
            }
        ],
    }
    policy = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "CANARY",
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20},
                "WaitIntervalInSeconds": 30,
            },
            "TerminationWaitInSeconds": 60,
        }
    }
    row = {"desc": desc, "variants": desc["ProductionVariants"], "kinds": [], "pending": pending, "deployment": policy}
    html = console.fragment("_endpoint_variants.html", row=row)
    assert "Deployment in progress: green" in html
    assert "Blue/green, CANARY (canary 20 CAPACITY_PERCENT)" in html and "bake 60 s" in html
    assert html.index("Creating") < html.index("ActivatingTraffic — canary 20%")
    assert "0.8 → 1" in html


def test_serverless_and_async_markers() -> None:
    console = Console(NoBackend())
    desc = {"EndpointName": "sls", "EndpointStatus": "InService", "LastModifiedTime": 0}
    variants = [
        {
            "VariantName": "A",
            "CurrentWeight": 1.0,
            "DesiredWeight": 1.0,
            "DesiredServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
        }
    ]
    html = console.fragment(
        "_endpoints_table.html", rows=[{"desc": desc, "variants": variants, "kinds": ["serverless", "async"]}]
    )
    assert "serverless 2048 MB" in html and ">async<" in html and ">serverless<" in html


def test_a_place_for_processing_jobs_when_the_control_plane_has_them() -> None:
    from starlette.requests import Request

    console = Console(NoBackend())
    scope = {"type": "http", "method": "GET", "path": "/console/endpoints", "headers": [], "query_string": b""}
    html = console.render(Request(scope), "error.html", code="X", detail="y").body.decode()
    assert 'href="/console/more/processing-jobs"' in html and "monitoring-schedules" not in html
