"""The web console in a real browser (Debian's chromium through Playwright) against a real server:
an endpoint created with boto3 turns InService on the page without a reload, a weight changed in the
page shows in DescribeEndpoint, the invoke panel answers, the log tail shows what the model printed,
a transform job's progress moves; screenshots at desktop and phone widths."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.browser import DESKTOP, PHONE, browser, output_dir  # noqa: F401 - the browser fixture
from tests.helpers import PYTHON_IMAGE, ROLE, Server, tarball

BUCKET = "console-tests"
CODE = """
import json, time

def model_fn(model_dir):
    time.sleep(3)  # slow to load: the endpoint stays Creating long enough to be seen
    print("console-test: model loaded", flush=True)
    return {}

def transform_fn(model, data, content_type, accept):
    text = data if isinstance(data, str) else data.decode()
    print(f"console-test: predicting {len(text.splitlines())} rows", flush=True)
    if "SLOW" in text:
        time.sleep(0.6)
    first = text.splitlines()[0] if text else ""
    return json.dumps({"rows": len(text.splitlines()), "first": first}), "application/json"
"""
SECRET = "hunter2-do-not-show"


@pytest.fixture(scope="module")
def model(server: Server, sm: Any) -> str:
    uri = f"s3://{BUCKET}/model/model.tar.gz"
    server.put_object(uri, tarball({"code/inference.py": CODE}))
    container = {"Image": PYTHON_IMAGE, "ModelDataUrl": uri, "Environment": {"API_TOKEN": SECRET, "MODE": "demo"}}
    sm.create_model(ModelName="console-model", ExecutionRoleArn=ROLE, PrimaryContainer=container)
    sm.create_endpoint_config(
        EndpointConfigName="console-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "console-model",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    return "console-model"


@pytest.fixture(scope="module")
def page(browser: Any, server: Server) -> Any:  # noqa: F811
    context = browser.new_context(viewport=DESKTOP)
    p = context.new_page()
    p.set_default_timeout(60_000)
    yield p
    context.close()


def test_endpoint_turns_in_service_without_a_reload(page: Any, server: Server, sm: Any, model: str) -> None:
    sm.create_endpoint(EndpointName="console-ep", EndpointConfigName="console-config")
    page.goto(f"{server.url}/console/endpoints")
    row = page.locator('tr[data-endpoint="console-ep"]')
    assert row.locator(".status").inner_text() == "Creating"  # rendered by the server, model still loading
    page.evaluate("window.__notReloaded = true")
    row.locator(".status", has_text="InService").wait_for(timeout=90_000)
    assert page.evaluate("window.__notReloaded") is True  # the live stream changed it, not a reload
    assert sm.describe_endpoint(EndpointName="console-ep")["EndpointStatus"] == "InService"


def test_invoke_panel_and_log_tail(page: Any, server: Server, rt: Any) -> None:
    page.goto(f"{server.url}/console/endpoints/console-ep")
    page.fill("#invoke-body", "1,2,3\n4,5,6")
    page.fill("#invoke-type", "text/csv")
    page.click("#invoke-form button")
    result = page.locator("#invoke-result")
    result.locator("text=HTTP 200").wait_for()
    want = rt.invoke_endpoint(EndpointName="console-ep", Body=b"1,2,3\n4,5,6", ContentType="text/csv")["Body"].read()
    assert page.locator("#invoke-result pre").inner_text() == want.decode()
    assert "application/json" in result.inner_text() and " ms" in result.inner_text()
    # the page's log tail follows live: the model printed a line per request
    page.locator("#log", has_text="console-test: predicting 2 rows").wait_for(timeout=30_000)
    assert "console-test: model loaded" in page.locator("#log").inner_text()


def test_weight_change_in_the_page_shows_in_describe_endpoint(page: Any, server: Server, sm: Any) -> None:
    page.goto(f"{server.url}/console/endpoints/console-ep")
    page.fill('input[name="weight:AllTraffic"]', "0.25")
    page.click("text=Update weights and capacities")
    page.locator(".flash.ok").wait_for()
    variant = sm.describe_endpoint(EndpointName="console-ep")["ProductionVariants"][0]
    assert variant["DesiredWeight"] == 0.25
    # the update puts the endpoint in Updating (as AWS), and the page offers the form again only once it is InService
    deadline = time.monotonic() + 90
    while sm.describe_endpoint(EndpointName="console-ep")["EndpointStatus"] != "InService":
        assert time.monotonic() < deadline, "the weight update never finished"
        time.sleep(0.2)
    page.goto(f"{server.url}/console/endpoints/console-ep")
    page.fill('input[name="weight:AllTraffic"]', "-1")  # a bad value: the API's own validation error
    page.click("text=Update weights and capacities")
    assert "ValidationException" in page.locator(".flash.bad").inner_text()
    page.fill('input[name="weight:AllTraffic"]', "lots")
    page.click("text=Update weights and capacities")
    assert "weight of variant AllTraffic must be a number" in page.locator(".flash.bad").inner_text()


def test_transform_job_progress_moves(page: Any, server: Server, sm: Any, model: str) -> None:
    for i in range(10):
        server.put_object(f"s3://{BUCKET}/batch/in/part-{i:02d}.csv", b"SLOW\n" * 3)
    sm.create_transform_job(
        TransformJobName="console-job",
        ModelName=model,
        MaxConcurrentTransforms=1,
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/batch/in/"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/batch/out/"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    page.goto(f"{server.url}/console/transform-jobs/console-job")
    page.evaluate("window.__notReloaded = true")
    seen: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        value = int(page.locator("#job-progress").get_attribute("value"))
        if not seen or seen[-1] != value:
            seen.append(value)
        if "Completed" in page.locator("#job-live .status").inner_text():
            break
        time.sleep(0.2)
    assert seen[-1] == 100 and page.evaluate("window.__notReloaded") is True
    assert any(0 < v < 100 for v in seen), seen  # it moved through intermediate values
    assert seen == sorted(seen)
    assert "console-test: predicting 3 rows" in page.locator("#log").inner_text()
    page.goto(f"{server.url}/console/transform-jobs")
    assert "Completed" in page.locator("#jobs-table").inner_text()


def test_read_only_pages_without_javascript(browser: Any, server: Server) -> None:  # noqa: F811
    context = browser.new_context(java_script_enabled=False, viewport=DESKTOP)
    p = context.new_page()
    try:
        p.goto(f"{server.url}/console/endpoints")
        assert "InService" in p.locator('tr[data-endpoint="console-ep"]').inner_text()
        p.goto(f"{server.url}/console/endpoints/console-ep")
        assert p.locator("#endpoint-charts svg").count() == 4
        assert "console-test: model loaded" in p.locator("#log").inner_text()
        p.goto(f"{server.url}/console/models")
        text = p.locator("main").inner_text()
        assert "API_TOKEN" in text and "••••••••" in text and SECRET not in p.content()
        assert "MODE" in text and "demo" in text
        p.goto(f"{server.url}/console/async")
        assert "No asynchronous endpoints" in p.locator("main").inner_text()
        # without JavaScript the invoke form posts and the page comes back with the answer
        p.goto(f"{server.url}/console/endpoints/console-ep")
        p.fill("#invoke-body", "7,8,9")
        p.fill("#invoke-type", "text/csv")
        p.click("#invoke-form button")
        assert "HTTP 200" in p.locator("#invoke-result").inner_text()
        assert '"rows": 1' in p.locator("#invoke-result pre").inner_text()
    finally:
        context.close()


def test_unknown_endpoint_page_is_an_aws_error(page: Any, server: Server) -> None:
    response = page.goto(f"{server.url}/console/endpoints/no-such-endpoint")
    assert response.status == 400
    assert "Could not find endpoint" in page.locator("main").inner_text()


def test_screenshots_at_desktop_and_phone_width(browser: Any, server: Server, rt: Any) -> None:  # noqa: F811
    for _ in range(20):  # some traffic for the charts (sampled every 5 s)
        rt.invoke_endpoint(EndpointName="console-ep", Body=b"1,2\n3,4", ContentType="text/csv")
    time.sleep(5.5)
    rt.invoke_endpoint(EndpointName="console-ep", Body=b"1,2", ContentType="text/csv")
    out = output_dir("console")
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport)
        p = context.new_page()
        try:
            p.goto(f"{server.url}/console/endpoints/console-ep")
            p.wait_for_timeout(2500)  # one live update
            width = p.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"], f"{name}: the page is {width}px wide"  # no sideways scrolling
            p.screenshot(path=str(out / f"endpoint-{name}.png"), full_page=True)
            p.goto(f"{server.url}/console/endpoints")
            p.screenshot(path=str(out / f"endpoints-{name}.png"), full_page=True)
        finally:
            context.close()
    assert (out / "endpoint-desktop.png").stat().st_size > 10_000


def test_delete_from_the_page(page: Any, server: Server, sm: Any) -> None:
    page.goto(f"{server.url}/console/endpoints/console-ep")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("text=Delete endpoint")
    page.locator(".flash.ok", has_text="Deleting endpoint console-ep").wait_for()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        names = [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]]
        if "console-ep" not in names:
            break
        time.sleep(0.3)
    assert "console-ep" not in names
