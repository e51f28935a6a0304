"""Property-based fuzzing of the whole API on one real server (no credentials file).

Requests are generated with hypothesis and sent over one raw keep-alive connection, each signed
with botocore's SigV4 signer (the test keys):

* control plane: any SageMaker operation of botocore's service model, its parameters drawn from
  the operation's input shape with garbage mixed in, plus raw bodies (bad JSON, deep nesting,
  invalid UTF-8) under real and made-up ``X-Amz-Target`` values;
* runtime: invocations with random endpoint names (traversal, encoded slashes), headers, content
  types and bodies, against a deployed echo model and names that do not exist;
* S3: random methods, paths, subresources, headers and bodies.

Every answer must be a success or a well-formed AWS error in the route's protocol (JSON 1.1
``__type``/``message``; the runtime's ``x-amzn-ErrorType`` + ``Message``; S3's ``<Error><Code>``),
never a 500 or a traceback; the server must still answer /ping; and nothing outside the data dir
may be created or changed by requests that name files outside it (``file://``, ``../``): a canary
directory is compared before and after, and no file named ``mhfuzz-escape*`` may appear.

The fast tier (unmarked, derandomised) sends about 300 requests; the ``slow`` tier more than 10,000.
Plus the archive cases: traversal, absolute names, symlinks and hardlinks out, device files, a
tar bomb (bounded by MODELHOST_MAX_ARTIFACT_BYTES and the compression ratio) and a zip.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import time
import zipfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import botocore.session
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import PYTHON_IMAGE, ROLE, RawClient, Server, tarball, wait_status

MAX_ARTIFACT_BYTES = 32 * 1024 * 1024
ESCAPE = "mhfuzz-escape"  # no file of this name may appear anywhere we look
ECHO = "fuzz-echo"

ECHO_MODEL = """
def model_fn(model_dir):
    return None


def transform_fn(model, data, content_type, accept):
    return data, content_type or "application/octet-stream"
"""


# --- the server, the canary ------------------------------------------------------------------


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mhfuzz-canary")
    (root / "secret.txt").write_text("canary: must never be read into an answer or changed\n")
    (root / "model.tar.gz").write_bytes(tarball({"code/inference.py": ECHO_MODEL}))
    (root / "sub").mkdir()
    (root / "sub" / "file").write_bytes(b"x")
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    out = {".": (0, root.stat().st_mtime_ns, "")}
    for path in sorted(root.rglob("*")):
        st_ = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(root))] = (st_.st_size, st_.st_mtime_ns, digest)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, canary: Path) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("mh-fuzz") / "data",
        # Only the data dir is allowed for local models: the canary is outside it.
        env={"MODELHOST_ALLOWED_MODEL_DIRS": "", "MODELHOST_MAX_ARTIFACT_BYTES": str(MAX_ARTIFACT_BYTES)},
    ).start()
    before = snapshot(canary)
    try:
        yield srv
    finally:
        alive = srv.proc is not None and srv.proc.poll() is None
        srv.stop()
        assert alive, "the server died during the fuzz run"
        assert snapshot(canary) == before, "a request changed the canary directory outside the data dir"


@pytest.fixture(scope="module")
def sm(server: Server) -> Any:
    return server.clients()[0]


@pytest.fixture(scope="module")
def echo(server: Server, sm: Any) -> str:
    server.put_object("s3://fuzz-models/echo.tar.gz", tarball({"code/inference.py": ECHO_MODEL}))
    sm.create_model(
        ModelName=ECHO,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": PYTHON_IMAGE, "ModelDataUrl": "s3://fuzz-models/echo.tar.gz"},
    )
    sm.create_endpoint_config(
        EndpointConfigName=ECHO,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": ECHO, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
    )
    sm.create_endpoint(EndpointName=ECHO, EndpointConfigName=ECHO)
    desc = wait_status(sm, ECHO, ("InService", "Failed"), 60)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return ECHO


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[RawClient]:
    raw = RawClient(server.url)
    yield raw
    raw.close()


def escapes_found(server: Server, canary: Path) -> list[Path]:
    places = {Path("/tmp"), canary, canary.parent, server.data_dir.parent, server.data_dir.parent.parent, Path.cwd()}
    found = []
    for place in places:
        try:
            found += [p for p in place.iterdir() if p.name.startswith(ESCAPE)]
        except OSError:
            continue
    return found


def after_run(server: Server, client: RawClient, canary: Path) -> None:
    status, _, _ = client.request("GET", "/ping", service=None)
    assert status == 200, "the server stopped answering /ping"
    assert server.proc is not None and server.proc.poll() is None
    assert not escapes_found(server, canary)
    print(f"answers by status: {dict(sorted(statuses.items()))}; known bugs seen: {seen_known}")


# --- what an answer must look like -----------------------------------------------------------


class BadAnswer(AssertionError):
    pass


def _no_traceback(body: bytes) -> None:
    if b"Traceback (most recent call last)" in body or b'File "/' in body:
        raise BadAnswer(f"a traceback in the answer: {body[:500]!r}")


def check_json11(status: int, headers: dict[str, str], body: bytes) -> None:
    _no_traceback(body)
    if 200 <= status < 300:
        if body:
            json.loads(body)
        return
    if status == 500 or status < 400:
        raise BadAnswer(f"status {status}: {body[:500]!r}")
    try:
        doc = json.loads(body)
    except ValueError:
        raise BadAnswer(f"status {status} with a body that is not JSON: {body[:300]!r}") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("__type"), str) and doc["__type"]):
        raise BadAnswer(f"status {status} without __type: {body[:300]!r}")
    if not isinstance(doc.get("message", doc.get("Message")), str):
        raise BadAnswer(f"status {status} without a message: {body[:300]!r}")


def check_runtime(status: int, headers: dict[str, str], body: bytes) -> None:
    if status == 200:
        return  # the model's own bytes
    _no_traceback(body)
    if status == 500 or status < 400:
        raise BadAnswer(f"status {status}: {body[:500]!r}")
    if not headers.get("x-amzn-errortype"):
        raise BadAnswer(f"status {status} without x-amzn-ErrorType: {body[:300]!r}")
    try:
        doc = json.loads(body)
    except ValueError:
        raise BadAnswer(f"status {status} with a body that is not JSON: {body[:300]!r}") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("Message", doc.get("message")), str)):
        raise BadAnswer(f"status {status} without a Message: {body[:300]!r}")


def check_s3(method: str, status: int, headers: dict[str, str], body: bytes) -> None:
    _no_traceback(body)
    if status < 400:
        return
    if status == 500:
        raise BadAnswer(f"status {status}: {body[:500]!r}")
    if method == "HEAD" and not body:
        return  # S3 answers HEAD errors without a body
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise BadAnswer(f"status {status} with a body that is not XML: {body[:300]!r}") from None
    code = root.findtext("Code")
    if root.tag != "Error" or not code:
        raise BadAnswer(f"status {status} without <Error><Code>: {body[:300]!r}")


# --- strategies ------------------------------------------------------------------------------


def nasty_strings(canary: str) -> st.SearchStrategy[str]:
    fixed = [
        "",
        "a",
        "0",
        "fuzz",
        ECHO,
        "a" * 64,
        "a" * 5000,
        "../" * 8 + f"tmp/{ESCAPE}",
        f"../{ESCAPE}",
        f"/tmp/{ESCAPE}",
        f"file:///tmp/{ESCAPE}",
        f"file://{canary}/secret.txt",
        f"file://{canary}/model.tar.gz",
        f"file://{canary}/",
        f"{canary}/secret.txt",
        f"{canary}/model.tar.gz",
        "file:///etc/passwd",
        "file:///etc/",
        "/etc/shadow",
        "s3://fuzz-models/../../../etc/passwd",
        f"s3://fuzz-models/{'../' * 6}{canary.lstrip('/')}/secret.txt",
        "s3://fuzz-models/echo.tar.gz",
        "s3://",
        "s3:///",
        "http://169.254.169.254/latest/meta-data/",
        "arn:aws:sagemaker:us-east-1:123456789012:endpoint/fuzz",
        "arn:aws:iam::123456789012:role/x",
        PYTHON_IMAGE,
        "\x00",
        "%00",
        "%2e%2e%2f",
        "😀" * 10,
        "\ud7ff\ue000",
        "-r /etc/passwd",
        "${jndi:ldap://x}",
        "' OR 1=1 --",
        "\\..\\..\\windows",
    ]
    return st.one_of(st.sampled_from(fixed), st.text(max_size=40))


def json_garbage() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    )
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    )


@cache
def sagemaker_model() -> Any:
    return botocore.session.get_session().get_service_model("sagemaker")


def shape_values(shape: Any, strings: st.SearchStrategy[str], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of a botocore shape, with a little garbage of any type mixed in."""
    garbage = json_garbage()
    kind = shape.type_name
    if depth > 4:
        typed: st.SearchStrategy[Any] = st.none()
    elif kind == "structure":
        members = shape.members
        typed = st.fixed_dictionaries(
            {},
            optional={
                name: st.deferred(lambda m=m: shape_values(m, strings, depth + 1)) for name, m in members.items()
            },
        )
    elif kind == "list":
        typed = st.lists(st.deferred(lambda: shape_values(shape.member, strings, depth + 1)), max_size=3)
    elif kind == "map":
        typed = st.dictionaries(strings, st.deferred(lambda: shape_values(shape.value, strings, depth + 1)), max_size=3)
    elif kind == "string":
        enum = list(getattr(shape, "enum", []) or [])
        typed = st.sampled_from(enum) | strings if enum else strings
    elif kind in ("integer", "long"):
        typed = st.sampled_from([0, 1, -1, 1_000_000, 2**31, 2**63]) | st.integers(min_value=-(2**64), max_value=2**64)
    elif kind in ("float", "double"):
        typed = st.floats(allow_nan=False, allow_infinity=False)
    elif kind == "boolean":
        typed = st.booleans()
    elif kind == "timestamp":
        typed = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False) | strings
    else:  # blob
        typed = strings
    return st.one_of(typed, typed, typed, garbage)


@cache
def operation_params(name: str, canary: str) -> st.SearchStrategy[Any]:
    shape = sagemaker_model().operation_model(name).input_shape
    if shape is None:
        return st.just({})
    return shape_values(shape, nasty_strings(canary))


def control_request(canary: str) -> st.SearchStrategy[tuple[str, bytes]]:
    ops = st.sampled_from(sorted(sagemaker_model().operation_names))
    return ops.flatmap(lambda op: operation_params(op, canary).map(lambda params: (op, json.dumps(params).encode())))


RAW_TARGETS = [
    "SageMaker.CreateModel",
    "SageMaker.DescribeEndpoint",
    "SageMaker.ListEndpoints",
    "SageMaker.CreateEndpoint",
    "SageMaker.",
    "SageMaker",
    "SageMaker.NoSuchOperation",
    "SageMaker.CreateModel.Extra",
    "AnyScaleFrontendService.RegisterScalableTarget",
    "AnyScaleFrontendService.DescribeScalingPolicies",
    "Logs_20140328.GetLogEvents",
    "Logs_20140328.DescribeLogStreams",
    "AWSCognitoIdentityService.GetId",
    "",
    ".",
    "x" * 300,
]


def raw_bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        st.integers(min_value=1, max_value=200_000).map(lambda n: b"[" * n),
        st.integers(min_value=1, max_value=20_000).map(lambda n: b'{"a":' * n),
        st.sampled_from(
            [
                b"",
                b"{}",
                b"null",
                b"[]",
                b'"x"',
                b"1" * 5000,
                b'{"EndpointName": NaN}',
                b'{"EndpointName": Infinity}',
                b'{"EndpointName": "\xff\xfe"}',
                b'{"EndpointName": "a", "EndpointName": "b"}',
                b'{"MaxResults": 1e400}',
                b'{"MaxResults": -0}',
                b'{"ModelName": "\\ud800"}',
                b"\xef\xbb\xbf{}",
            ]
        ),
        json_garbage().map(lambda v: json.dumps(v).encode()),
    )


HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
CONTENT_TYPES = (
    st.sampled_from(
        [
            "application/x-amz-json-1.1",
            "application/x-amz-json-1.0",
            "application/json",
            "text/plain",
            "text/csv",
            "application/octet-stream",
            "multipart/form-data; boundary=x",
            "",
        ]
    )
    | HEADER_TEXT
)


def path_segment(canary: str) -> st.SearchStrategy[str]:
    """An endpoint name or S3 key as it appears in a request target (percent-encoded or raw)."""
    raw = st.one_of(
        st.sampled_from(["..", ".", "..%2f..%2fetc", "%2e%2e", f"..%2f{ESCAPE}", ECHO, "a" * 70, "a" * 300, ""]),
        nasty_strings(canary),
    )
    return st.tuples(raw, st.booleans()).map(lambda t: quote(t[0], safe="/%") if t[1] else quote(t[0], safe=""))


@st.composite
def runtime_request(draw: st.DrawFn, canary: str) -> tuple[str, str, dict[str, str], bytes]:
    name = draw(st.sampled_from([ECHO, ECHO, ECHO, "no-such-endpoint"]) | path_segment(canary))
    kind = draw(st.sampled_from(["invocations"] * 6 + ["async-invocations", "x", ""]))
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT", "DELETE"]))
    headers: dict[str, str] = {}
    for header, values in (
        ("Content-Type", CONTENT_TYPES),
        ("Accept", CONTENT_TYPES),
        ("X-Amzn-SageMaker-Custom-Attributes", HEADER_TEXT | st.just("a" * 1025)),
        ("X-Amzn-SageMaker-Target-Variant", HEADER_TEXT | st.just("AllTraffic")),
        ("X-Amzn-SageMaker-Target-Model", HEADER_TEXT),
        ("X-Amzn-SageMaker-Inference-Id", HEADER_TEXT | st.just("a" * 65)),
        ("X-Amzn-SageMaker-Enable-Explanations", HEADER_TEXT),
        ("X-Amzn-SageMaker-InputLocation", nasty_strings(canary).filter(lambda s: s.isascii() and s.isprintable())),
        ("X-Amzn-SageMaker-RequestTTLSeconds", HEADER_TEXT),
        ("Origin", st.just("http://attacker.example")),
        ("Transfer-Encoding", st.just("chunked")),
    ):
        if draw(st.integers(0, 3)) == 0:
            headers[header] = draw(values)
    headers.pop("Transfer-Encoding", None)  # http.client would frame it itself; not this layer's subject
    body = draw(st.binary(max_size=2000) | raw_bodies())
    return method, f"/endpoints/{name}/{kind}", headers, body


S3_SUBRESOURCES = [
    "",
    "acl",
    "tagging",
    "uploads",
    "uploadId=nope",
    "uploadId=nope&partNumber=1",
    "partNumber=0&uploadId=x",
    "partNumber=-1&uploadId=x",
    "partNumber=99999999999999999999&uploadId=x",
    "list-type=2",
    "list-type=2&max-keys=-1",
    "list-type=2&max-keys=abc",
    "list-type=2&max-keys=99999999999999999999",
    "list-type=2&continuation-token=%00garbage",
    "list-type=2&start-after=%2e%2e",
    "list-type=3",
    "delimiter=/&prefix=..%2f",
    "marker=%ff",
    "encoding-type=url",
    "encoding-type=nope",
    "delete",
    "versioning",
    "location",
    "versionId=x",
    "response-content-type=text/html",
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=garbage&X-Amz-Signature=00",
    "%zz",
    "a=%",
]


@st.composite
def s3_request(draw: st.DrawFn, canary: str) -> tuple[str, str, dict[str, str], bytes]:
    method = draw(st.sampled_from(["GET", "PUT", "HEAD", "DELETE", "POST", "PATCH", "OPTIONS"]))
    bucket = draw(st.sampled_from(["fuzz-a"] * 4 + ["fuzz-b", "Bad_Bucket", "a", "x" * 70, "..", "fuzz-a.."]))
    key = draw(st.sampled_from(["", "k", "k", "dir/k", "dir/", "a/b/c"]) | path_segment(canary))
    query = draw(st.sampled_from(S3_SUBRESOURCES))
    path = f"/{bucket}" + (f"/{key}" if key or draw(st.booleans()) else "") + (f"?{query}" if query else "")
    headers: dict[str, str] = {}
    copy_sources = st.sampled_from(
        [
            "/fuzz-a/k",
            "fuzz-a/../../etc/passwd",
            f"/fuzz-a/{'..%2f' * 8}{quote(canary.lstrip('/'))}%2fsecret.txt",
            f"/{'../' * 8}{canary.lstrip('/')}/secret.txt",
            "/",
            "",
        ]
    )
    for header, values in (
        ("x-amz-copy-source", copy_sources | HEADER_TEXT),
        ("Range", st.sampled_from(["bytes=0-1", "bytes=-1", "bytes=5-1", "bytes=x", "bytes=0-99999999999999999999"])),
        ("Content-MD5", st.sampled_from(["garbage", "1B2M2Y8AsgTpgAmY7PhCfg==", ""]) | HEADER_TEXT),
        ("x-amz-checksum-crc32", HEADER_TEXT),
        ("x-amz-checksum-sha256", HEADER_TEXT),
        ("x-amz-metadata-directive", st.sampled_from(["COPY", "REPLACE", "garbage"])),
        ("x-amz-meta-fuzz", HEADER_TEXT),
        ("If-Match", HEADER_TEXT),
        ("If-None-Match", HEADER_TEXT),
        ("If-Modified-Since", HEADER_TEXT),
        ("Content-Type", CONTENT_TYPES),
        ("x-amz-decoded-content-length", st.sampled_from(["-1", "abc", "99999999999999"])),
        ("Content-Encoding", st.sampled_from(["aws-chunked", "gzip", "garbage"])),
        ("x-amz-copy-source-range", st.sampled_from(["bytes=0-0", "bytes=9-1", "x"])),
    ):
        if draw(st.integers(0, 4)) == 0:
            headers[header] = draw(values)
    body = draw(st.binary(max_size=1500))
    # Sometimes a payload hash that does not match (the server must say so, not crash).
    sha = draw(st.sampled_from([None, None, "UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "0" * 64, "zz"]))
    if sha is not None:
        headers["x-amz-content-sha256"] = sha
    return method, path, headers, body


# --- sending ---------------------------------------------------------------------------------


def send(client: RawClient, method: str, path: str, headers: dict[str, str], body: bytes, service: str) -> Any:
    try:
        signed: str | None = service
        client.signed_headers(method, path, body, headers, service)
    except Exception:  # a target botocore cannot sign: sent unsigned
        signed = None
    return client.request(method, path, body, headers, service=signed)


def repro(method: str, path: str, headers: dict[str, str], body: bytes) -> str:
    return f"{method} {path} headers={headers!r} body={body[:400]!r}{'...' if len(body) > 400 else ''}"


# Bugs the fuzzer found in code other suites own, each with an xfail(strict=True) test below that
# replays its minimal request; answers that match one are counted, not failed, so the fuzzer goes
# on looking for others. (id -> does this answer show it)
KNOWN_BUGS: dict[str, Any] = {}  # none open


seen_known: dict[str, int] = {}
statuses: dict[int, int] = {}  # every answer's status, for the summary line


def judge(check: Any, method: str, path: str, headers: dict[str, str], body: bytes, *answer: Any) -> None:
    """Apply ``check`` to (status, headers, body); a failure names the request that caused it."""
    status, _, data = answer
    statuses[status] = statuses.get(status, 0) + 1
    try:
        check(*answer)
    except BadAnswer as exc:
        for bug, shows in KNOWN_BUGS.items():
            if shows(status, data):
                seen_known[bug] = seen_known.get(bug, 0) + 1
                return
        raise BadAnswer(f"{exc}\n  request: {repro(method, path, headers, body)}") from None


FAST = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


# The slow tier replays the same generated requests in every CI run (a red CI means a regression, not
# luck); MODELHOST_FUZZ_RANDOM=1 draws new ones each run, to look for bugs nobody has found yet.
EXPLORE = os.environ.get("MODELHOST_FUZZ_RANDOM") == "1"


def tier(fast: int, slow: int) -> Any:
    """(settings for the fast tier, settings for the slow tier)."""
    return settings(FAST, max_examples=fast), settings(FAST, max_examples=slow, derandomize=not EXPLORE)


CONTROL = tier(100, 3500)
RAW = tier(40, 1500)
RUNTIME = tier(80, 2500)
S3 = tier(80, 2600)


def fuzz_control(client: RawClient, canary: Path, conf: Any) -> None:
    @conf
    @given(request=control_request(str(canary)))
    def run(request: tuple[str, bytes]) -> None:
        op, body = request
        headers = {"X-Amz-Target": f"SageMaker.{op}", "Content-Type": "application/x-amz-json-1.1"}
        status, answer, data = send(client, "POST", "/", headers, body, "sagemaker")
        judge(check_json11, "POST", "/", headers, body, status, answer, data)

    run()


def fuzz_raw_control(client: RawClient, conf: Any) -> None:
    @conf
    @given(target=st.sampled_from(RAW_TARGETS) | HEADER_TEXT, content_type=CONTENT_TYPES, body=raw_bodies())
    def run(target: str, content_type: str, body: bytes) -> None:
        headers = {"X-Amz-Target": target, "Content-Type": content_type}
        status, answer, data = send(client, "POST", "/", headers, body, "sagemaker")
        judge(check_json11, "POST", "/", headers, body, status, answer, data)

    run()


def fuzz_runtime(client: RawClient, canary: Path, conf: Any) -> None:
    @conf
    @given(request=runtime_request(str(canary)))
    def run(request: tuple[str, str, dict[str, str], bytes]) -> None:
        method, path, headers, body = request
        status, answer, data = send(client, method, path, headers, body, "sagemaker")
        if path.endswith("/invocations") or path.endswith("/async-invocations"):
            judge(check_runtime, method, path, headers, body, status, answer, data)
        else:
            judge(lambda *a: check_any_aws(method, *a), method, path, headers, body, status, answer, data)

    run()


def check_any_aws(method: str, status: int, headers: dict[str, str], body: bytes) -> None:
    """A path no route claims: whichever protocol answers, it answers in its own shape."""
    if body.lstrip().startswith(b"<"):
        check_s3(method, status, headers, body)
    elif headers.get("x-amzn-errortype"):
        check_runtime(status, headers, body)
    else:
        check_json11(status, headers, body)


def fuzz_s3(client: RawClient, canary: Path, conf: Any) -> None:
    @conf
    @given(request=s3_request(str(canary)))
    def run(request: tuple[str, str, dict[str, str], bytes]) -> None:
        method, path, headers, body = request
        status, answer, data = send(client, method, path, headers, body, "s3")
        judge(lambda *a: check_s3(method, *a), method, path, headers, body, status, answer, data)

    run()


@pytest.fixture(scope="module")
def buckets(client: RawClient) -> None:
    for bucket in ("fuzz-a", "fuzz-b"):
        status, _, data = client.request("PUT", f"/{bucket}", service="s3")
        assert status in (200, 409), data
    status, _, data = client.request("PUT", "/fuzz-a/k", b"hello", service="s3")
    assert status == 200, data


# --- the fast tier ---------------------------------------------------------------------------


def test_fuzz_control_plane(server: Server, client: RawClient, canary: Path) -> None:
    fuzz_control(client, canary, CONTROL[0])
    after_run(server, client, canary)


def test_fuzz_control_plane_raw_bodies(server: Server, client: RawClient, canary: Path) -> None:
    fuzz_raw_control(client, RAW[0])
    after_run(server, client, canary)


def test_fuzz_runtime(server: Server, client: RawClient, canary: Path, echo: str) -> None:
    fuzz_runtime(client, canary, RUNTIME[0])
    after_run(server, client, canary)


def test_fuzz_s3(server: Server, client: RawClient, canary: Path, buckets: None) -> None:
    fuzz_s3(client, canary, S3[0])
    after_run(server, client, canary)


# --- the slow tier: more than 10,000 requests --------------------------------------------------


@pytest.mark.slow
def test_fuzz_many(server: Server, client: RawClient, canary: Path, echo: str, buckets: None) -> None:
    total = sum(conf[1].max_examples for conf in (CONTROL, RAW, RUNTIME, S3))
    assert total >= 10_000
    fuzz_control(client, canary, CONTROL[1])
    fuzz_raw_control(client, RAW[1])
    fuzz_runtime(client, canary, RUNTIME[1])
    fuzz_s3(client, canary, S3[1])
    after_run(server, client, canary)


# --- archives ----------------------------------------------------------------------------------


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        code = ECHO_MODEL.encode()
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(code)
        tar.addfile(info, io.BytesIO(code))
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = "") -> tuple[Any, Any]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self.left)
        buf[:n] = b"\0" * n
        self.left -= n
        return n


def _bomb(size: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = size
        tar.addfile(info, io.BufferedReader(_Zeros(size)))
    return out.getvalue()


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("code/inference.py", ECHO_MODEL)
        z.writestr(f"../../../../tmp/{ESCAPE}-zip", "escaped")
        z.writestr("zeros.bin", b"\0" * (8 * 1024 * 1024))
    return out.getvalue()


def archive_cases(canary: Path) -> list[tuple[str, bytes, str]]:
    """(case, archive, what FailureReason must say)."""
    return [
        ("dotdot", _tar([_member(f"../../../../tmp/{ESCAPE}-dotdot")]), "unsafe archive member"),
        ("absolute-link", _tar([_member("evil", tarfile.SYMTYPE, link=f"/tmp/{ESCAPE}-abs")]), "unsafe archive member"),
        ("symlink-out", _tar([_member("evil", tarfile.SYMTYPE, link=f"../../../{ESCAPE}")]), "unsafe archive member"),
        (
            "symlink-then-write",
            _tar([_member("d", tarfile.SYMTYPE, link=str(canary)), _member("d/secret.txt", data=b"overwritten")]),
            "unsafe archive member",
        ),
        (
            "hardlink-out",
            _tar([_member("h", tarfile.LNKTYPE, link=str(canary / "secret.txt"))]),
            "unsafe archive member",
        ),
        ("device", _tar([_member("null", tarfile.CHRTYPE)]), "unsafe archive member"),
        ("fifo", _tar([_member("fifo", tarfile.FIFOTYPE)]), "unsafe archive member"),
        ("bomb-cap", _bomb(MAX_ARTIFACT_BYTES + 1024 * 1024), f"more than {MAX_ARTIFACT_BYTES} bytes"),
        ("bomb-ratio", _bomb(MAX_ARTIFACT_BYTES // 2), "times its compressed size"),
        ("zip", _zip(), "valid tar.gz"),
        ("garbage", b"\x1f\x8b" + os.urandom(200), "valid tar.gz"),
    ]


@pytest.mark.parametrize("case", [c[0] for c in archive_cases(Path("/x"))])
def test_hostile_archive_fails_the_endpoint_and_writes_nothing_outside(
    server: Server, sm: Any, canary: Path, case: str
) -> None:
    (_, data, reason) = next(c for c in archive_cases(canary) if c[0] == case)
    name = f"fuzz-archive-{case}"
    server.put_object(f"s3://fuzz-models/{name}.tar.gz", data)
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": PYTHON_IMAGE, "ModelDataUrl": f"s3://fuzz-models/{name}.tar.gz"},
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    started = time.monotonic()
    desc = wait_status(sm, name, ("InService", "Failed"), 60)
    assert desc["EndpointStatus"] == "Failed", desc
    assert reason in desc["FailureReason"], desc["FailureReason"]
    assert "canary: must never" not in desc["FailureReason"]
    assert time.monotonic() - started < 30
    assert not escapes_found(server, canary)
    assert (canary / "secret.txt").read_text().startswith("canary:")
    # Nothing half-extracted is left in the cache.
    leftovers = [p for p in server.data_dir.rglob(".extract-*")]
    assert not leftovers, leftovers
    sm.delete_endpoint(EndpointName=name)


@pytest.mark.parametrize(
    "url", ["file://{canary}/model.tar.gz", "{canary}/model.tar.gz", "file://{canary}/", "s3://fuzz-models/../../x"]
)
def test_model_data_outside_the_data_dir_is_refused(server: Server, sm: Any, canary: Path, url: str) -> None:
    """A model naming a file outside the allowed directories never serves it (refused at
    CreateModel, or the endpoint fails without reading it)."""
    from botocore.exceptions import ClientError

    name = f"fuzz-outside-{abs(hash(url)) % 10**6}"
    try:
        sm.create_model(
            ModelName=name,
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": PYTHON_IMAGE, "ModelDataUrl": url.format(canary=canary)},
        )
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ValidationException", exc.response
        assert "canary: must never" not in str(exc)
        return
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    desc = wait_status(sm, name, ("InService", "Failed"), 60)
    assert desc["EndpointStatus"] == "Failed", desc
    assert "canary: must never" not in desc["FailureReason"]


# --- bugs the fuzzer found, replayed (fixed) ---------------------------------------------------


@pytest.mark.parametrize(
    "method, path", [("GET", "/endpoints/x/invocations"), ("POST", "/endpoints/x/x"), ("POST", "/ping"), ("GET", "/")]
)
def test_unrouted_paths_and_methods_answer_aws_errors(client: RawClient, method: str, path: str) -> None:
    status, headers, data = client.request(method, path, b"{}", {"Content-Type": "application/json"})
    check_any_aws(method, status, headers, data)


def test_a_lone_surrogate_in_a_json_body_is_a_serialization_error(client: RawClient) -> None:
    body = b'{"ModelName":"\\ud800"}'
    status, headers, data = client.request(
        "POST", "/", body, {"X-Amz-Target": "SageMaker.CreateModel", "Content-Type": "application/x-amz-json-1.1"}
    )
    assert status == 400 and json.loads(data)["__type"] == "SerializationException", data


def test_s3_error_xml_with_a_control_character_in_the_key_parses(client: RawClient, buckets: None) -> None:
    status, headers, data = client.request("GET", "/fuzz-a/%1F", service="s3")
    assert status == 404
    check_s3("GET", status, headers, data)
