"""The console on a server with a credentials file: a login with an access key and secret checked like
a signed request, a signed HTTP-only session cookie, the key's permissions on the console's actions,
and the audit log page."""

from __future__ import annotations

import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.browser import DESKTOP, browser  # noqa: F401 - the browser fixture
from tests.helpers import SKLEARN_IMAGE, Server, deploy, sklearn_model

ADMIN = ("AKIDCONSOLEADMIN", "admin-console-secret")
VIEWER = ("AKIDCONSOLEVIEWER", "viewer-console-secret")
CREDENTIALS = f"""
[admin]
aws_access_key_id = {ADMIN[0]}
aws_secret_access_key = {ADMIN[1]}
permissions = *

[viewer]
aws_access_key_id = {VIEWER[0]}
aws_secret_access_key = {VIEWER[1]}
permissions = sagemaker:Describe*,sagemaker:List*
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("console-auth")
    (root / "credentials").write_text(CREDENTIALS)
    srv = Server(root / "data", credentials_file=root / "credentials").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def endpoint(server: Server) -> str:
    session = boto3.Session(aws_access_key_id=ADMIN[0], aws_secret_access_key=ADMIN[1], region_name="us-east-1")
    sm = session.client("sagemaker", endpoint_url=server.url)
    s3 = session.client("s3", endpoint_url=server.url)
    s3.create_bucket(Bucket="console-auth")
    s3.put_object(Bucket="console-auth", Key="model.tar.gz", Body=sklearn_model()[0])
    uri = "s3://console-auth/model.tar.gz"
    assert deploy(sm, "secure-ep", {"Image": SKLEARN_IMAGE, "ModelDataUrl": uri})["EndpointStatus"] == "InService"
    return "secure-ep"


def login(page: Any, server: Server, key: tuple[str, str], target: str = "/console/endpoints") -> None:
    page.goto(server.url + target)
    assert "/console/login" in page.url  # every page asks for a login first
    page.fill("#access_key", key[0])
    page.fill("#secret_key", key[1])
    with page.expect_navigation():
        page.click("main form button")


def test_pages_need_a_login_and_a_valid_cookie(server: Server, endpoint: str) -> None:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(f"{server.url}/console/endpoints") as r:
        assert r.url.endswith("/console/login?next=%2Fconsole%2Fendpoints")
    for cookie in ("", "modelhost_console=AKIDCONSOLEADMIN.9999999999.00ff", "modelhost_console=garbage"):
        request = urllib.request.Request(f"{server.url}/console/events/endpoints", headers={"Cookie": cookie})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request)
        assert err.value.code == 401
    form = urllib.parse.urlencode({"access_key": ADMIN[0], "secret_key": "wrong", "next": "/console/endpoints"})
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(f"{server.url}/console/login", data=form.encode())
    assert err.value.code == 401 and "not right" in err.value.read().decode()
    # an open redirect is not possible through next=
    form = urllib.parse.urlencode({"access_key": ADMIN[0], "secret_key": ADMIN[1], "next": "//evil.example/x"})
    with opener.open(f"{server.url}/console/login", data=form.encode()) as r:
        assert r.url == f"{server.url}/console/endpoints" and "secure-ep" in r.read().decode()


def test_session_cookie_and_permissions_on_actions(browser: Any, server: Server, endpoint: str) -> None:  # noqa: F811
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    try:
        login(page, server, VIEWER, "/console/endpoints/secure-ep")
        assert page.url.endswith("/console/endpoints/secure-ep")
        cookie = next(c for c in context.cookies() if c["name"] == "modelhost_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
        assert page.evaluate("document.cookie") == ""  # not readable by scripts
        assert "viewer" in page.locator(".who").inner_text()
        # the viewer may read but not change or invoke
        page.fill('input[name="weight:AllTraffic"]', "0.5")
        page.click("text=Update weights and capacities")
        denied = page.locator(".flash.bad").inner_text()
        assert "AccessDeniedException" in denied and "sagemaker:UpdateEndpointWeightsAndCapacities" in denied
        page.fill("#invoke-body", "0.1,0.2,0.3,0.1,0.1,0.1,0.1,0.1,0.1,0.1")
        page.fill("#invoke-type", "text/csv")
        page.click("#invoke-form button")
        page.locator("#invoke-result", has_text="AccessDeniedException").wait_for()
        with page.expect_navigation():
            page.click(".who button")
        assert "/console/login" in page.url
        # the admin may; the change is in the audit log, credited to the admin key
        login(page, server, ADMIN, "/console/endpoints/secure-ep")
        page.fill('input[name="weight:AllTraffic"]', "0.5")
        page.click("text=Update weights and capacities")
        page.locator(".flash.ok").wait_for()
        page.click("nav >> text=Audit log")
        row = page.locator("tr", has_text="sagemaker:UpdateEndpointWeightsAndCapacities").first
        assert "admin" in row.inner_text() and "endpoint/secure-ep" in row.inner_text()
    finally:
        context.close()
