"""Pure logic of inference pipelines and multi-model endpoints: the container rules, the chain (with a
fake hop), target checks, model affinity (consistent hashing, spill-over), instance memory, and the
model cache driven through a fake of the multi-model container contract."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelhost.backends.chain import CONTAINER_LATENCIES, FAILED_CONTAINER, HopResponse, parse_latencies, run_chain
from modelhost.backends.local.http import HttpResponse
from modelhost.backends.local.model_cache import CachePolicy, ModelCache
from modelhost.backends.local.model_disk import DiskTier
from modelhost.backends.multimodel import NoEvents, TargetModelMissing, TargetModelNotReady
from modelhost.hosting.affinity import ModelAffinity
from modelhost.hosting.errors import TargetContainerRequired, TargetContainerUnknown, TargetModelNotSupported
from modelhost.hosting.targets import VariantTargets, check_targets
from modelhost.resources.containers import ContainerRuleViolation, ExecutionMode, check_model, model_definition
from modelhost.resources.instance_types import memory_mib
from modelhost.store.artifacts import ArtifactCache
from modelhost.store.blobs_files import FileBlobs
from tests.helpers import tarball

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"

# --- container rules and records


def test_model_definition_names_and_modes() -> None:
    d = model_definition({"Containers": [{"Image": IMAGE}, {"Image": IMAGE}]})
    assert d.is_pipeline and d.hostnames == ("container-1", "container-2")
    assert d.execution_mode is ExecutionMode.SERIAL and not d.direct
    d = model_definition(
        {
            "Containers": [{"Image": IMAGE, "ContainerHostname": "a"}, {"Image": IMAGE, "ContainerHostname": "b"}],
            "InferenceExecutionConfig": {"Mode": "Direct"},
        }
    )
    assert d.direct and d.hostnames == ("a", "b")
    m = model_definition(
        {"PrimaryContainer": {"Image": IMAGE, "Mode": "MultiModel", "ModelDataUrl": "s3://b/p/",
                              "MultiModelConfig": {"ModelCacheSetting": "Disabled"}}}
    )  # fmt: skip
    assert m.multi_model and not m.containers[0].cache_enabled


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({}, "Exactly one of PrimaryContainer or Containers"),
        ({"Containers": [{"Image": IMAGE}] * 16}, "less than or equal to 15"),
        (
            {"Containers": [{"Image": IMAGE}] * 2, "InferenceExecutionConfig": {"Mode": "Direct"}},
            "every container when InferenceExecutionConfig.Mode is Direct",
        ),
        ({"PrimaryContainer": {"Image": IMAGE, "Mode": "MultiModel"}}, "ModelDataUrl (an S3 prefix) is required"),
        (
            {"PrimaryContainer": {"Image": IMAGE}, "InferenceExecutionConfig": {"Mode": "Serial"}},
            "only be specified for a model with Containers",
        ),
    ],
)
def test_check_model_refuses(req: dict[str, Any], message: str) -> None:
    with pytest.raises(ContainerRuleViolation, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_model(req)


def test_instance_memory() -> None:
    assert memory_mib("ml.m5.large") == 8192
    assert memory_mib("ml.m5.4xlarge") == 65536
    assert memory_mib("ml.t2.medium") == 4096
    assert memory_mib("ml.c5.xlarge") == 8192
    assert memory_mib("ml.zz.large") is None and memory_mib(None) is None


# --- the chain


def _fake_send(answers: dict[int, HopResponse], seen: list[tuple[int, dict[bytes, bytes], bytes]]) -> Any:
    async def send(index: int, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float) -> HopResponse:
        seen.append((index, dict(headers), body))
        return answers[index]

    return send


def test_serial_chain_carries_body_and_content_type() -> None:
    seen: list[tuple[int, dict[bytes, bytes], bytes]] = []
    answers = {
        0: HopResponse(200, {b"content-type": b"text/csv"}, b"1,2"),
        1: HopResponse(200, {b"content-type": b"application/json"}, b"[3]"),
    }
    headers = [
        (b"content-type", b"application/json"),
        (b"accept", b"application/json"),
        (b"x-amzn-sagemaker-custom-attributes", b"c"),
    ]
    result = asyncio.run(run_chain(ExecutionMode.SERIAL, ["a", "b"], _fake_send(answers, seen), headers, b"{}", 5))
    assert result.response.body == b"[3]" and result.failed is None
    assert seen[0][1] == {b"content-type": b"application/json", b"x-amzn-sagemaker-custom-attributes": b"c"}
    assert seen[1][1][b"content-type"] == b"text/csv" and seen[1][1][b"accept"] == b"application/json"
    assert seen[1][2] == b"1,2"
    annotated = result.annotated()
    assert [h for h, _ in parse_latencies(annotated.headers[CONTAINER_LATENCIES])] == ["a", "b"]


def test_serial_chain_stops_at_the_failing_container() -> None:
    seen: list[tuple[int, dict[bytes, bytes], bytes]] = []
    answers = {0: HopResponse(200, {}, b"x"), 1: HopResponse(400, {}, b"bad"), 2: HopResponse(200, {}, b"never")}
    result = asyncio.run(run_chain(ExecutionMode.SERIAL, ["a", "b", "c"], _fake_send(answers, seen), [], b"", 5))
    assert result.failed == "b" and result.response.status == 400 and len(seen) == 2
    assert result.annotated().headers[FAILED_CONTAINER] == b"b"


def test_direct_chain_calls_only_the_target() -> None:
    seen: list[tuple[int, dict[bytes, bytes], bytes]] = []
    answers = {0: HopResponse(200, {}, b"a"), 1: HopResponse(200, {}, b"b")}
    headers = [(b"x-amzn-sagemaker-target-container-hostname", b"second"), (b"accept", b"text/csv")]
    result = asyncio.run(
        run_chain(ExecutionMode.DIRECT, ["first", "second"], _fake_send(answers, seen), headers, b"", 5)
    )
    assert result.response.body == b"b" and [i for i, _, _ in seen] == [1]
    assert b"x-amzn-sagemaker-target-container-hostname" not in seen[0][1] and seen[0][1][b"accept"] == b"text/csv"


def test_target_checks() -> None:
    plain = VariantTargets()
    with pytest.raises(TargetModelNotSupported):
        check_targets("e", plain, "m.tar.gz", None)
    direct = VariantTargets(pipeline=True, direct_hostnames=("a", "b"))
    with pytest.raises(TargetContainerRequired):
        check_targets("e", direct, None, None)
    with pytest.raises(TargetContainerUnknown):
        check_targets("e", direct, None, "c")
    check_targets("e", direct, None, "a")
    check_targets("e", VariantTargets(multi_model=True), "m.tar.gz", None)


# --- affinity


@dataclass(eq=False)
class Rep:
    name: str
    outstanding: int = 0
    available: bool = True


class Fleet:
    def __init__(self, reps: Sequence[Rep]) -> None:
        self.reps = list(reps)

    def replicas(self) -> Sequence[Rep]:
        return self.reps

    def claim(self, r: Rep) -> None:
        r.outstanding += 1


def test_consistent_hashing_moves_only_the_models_of_a_changed_instance() -> None:
    aff = ModelAffinity()
    reps = [Rep(f"v/{i}") for i in range(3)]
    targets = [f"m{i}.tar.gz" for i in range(1000)]
    before = {t: aff.homes(t, reps)[0].name for t in targets}
    assert len(set(before.values())) == 3
    assert max(list(before.values()).count(n) for n in set(before.values())) < 500  # spread
    reps[1].available = False  # unhealthy: its models move, no other does
    after = {t: aff.homes(t, reps)[0].name for t in targets}
    assert all(after[t] == before[t] for t in targets if before[t] != "v/1")
    reps[1].available = True
    reps.append(Rep("v/3"))
    grown = {t: aff.homes(t, reps)[0].name for t in targets}
    moved = [t for t in targets if grown[t] != before[t]]
    assert all(grown[t] == "v/3" for t in moved) and 100 < len(moved) < 400


def test_spill_over_only_for_a_warm_hot_model() -> None:
    aff = ModelAffinity(spill_outstanding=2)
    fleet = Fleet([Rep("v/0"), Rep("v/1")])
    home, second = aff.homes("hot", fleet.reps)
    home.outstanding = 5
    assert aff.pick(fleet, "hot") is home  # cold: everyone waits for the one load
    aff.served(home, "hot")
    assert aff.pick(fleet, "hot") is second and aff.spilled == 1


# --- the model cache, against a fake multi-model container


class FakeContainer:
    """The container contract in memory: POST/DELETE /models, /models/{id}/invoke."""

    def __init__(self, load_delay: float = 0.0) -> None:
        self.models: dict[str, str] = {}
        self.loads = 0
        self.load_delay = load_delay

    async def request(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> HttpResponse:
        path = target.decode()
        if method == b"POST" and path == "/models":
            doc = json.loads(body)
            if doc["model_name"] in self.models:
                return HttpResponse(409, {}, b"")
            await asyncio.sleep(self.load_delay)
            self.loads += 1
            self.models[doc["model_name"]] = Path(doc["url"], "name").read_text()
            return HttpResponse(200, {}, b"{}")
        name = path.split("/")[2]
        if method == b"DELETE":
            return HttpResponse(200 if self.models.pop(name, None) else 404, {}, b"")
        if name not in self.models:
            return HttpResponse(404, {}, b"")
        return HttpResponse(200, {b"content-type": b"text/plain"}, self.models[name].encode())

    async def close(self) -> None:
        pass


def _cache(tmp_path: Path, names: list[str], policy: CachePolicy, container: FakeContainer) -> ModelCache:
    for n in names:
        (tmp_path / "bucket" / "p").mkdir(parents=True, exist_ok=True)
        (tmp_path / "bucket" / "p" / n).write_bytes(tarball({"name": n}))
    artifacts = ArtifactCache(FileBlobs(), tmp_path / "cache")
    disk = DiskTier(artifacts, tmp_path / "disk", str(tmp_path / "bucket" / "p") + "/", 1 << 30, 1 << 30)
    cache = ModelCache("v/0", disk, policy, NoEvents())
    cache.attach(container, None)  # type: ignore[arg-type]  # the contract, faked
    return cache


def _invoke(cache: ModelCache, target: str) -> bytes:
    return asyncio.run(cache.invoke([(b"x-amzn-sagemaker-target-model", target.encode())], b"", 5)).body


def test_cache_loads_once_evicts_lru_and_reports_missing(tmp_path: Path) -> None:
    container = FakeContainer()
    # sizes are RSS growth, 0 here (no process): a zero budget keeps exactly one model
    cache = _cache(tmp_path, ["a.tar.gz", "b.tar.gz"], CachePolicy(memory_budget=-1), container)

    async def racing() -> list[bytes]:
        calls = [cache.invoke([(b"x-amzn-sagemaker-target-model", b"a.tar.gz")], b"", 5) for _ in range(20)]
        return [r.body for r in await asyncio.gather(*calls)]

    container.load_delay = 0.05
    assert set(asyncio.run(racing())) == {b"a.tar.gz"} and container.loads == 1
    assert _invoke(cache, "b.tar.gz") == b"b.tar.gz" and list(cache.loaded) == ["b.tar.gz"]
    assert cache.evictions == 1 and container.loads == 2
    with pytest.raises(TargetModelMissing) as missing:
        _invoke(cache, "nope.tar.gz")
    assert missing.value.key.endswith("p/nope.tar.gz")


def test_cache_not_ready_then_ready(tmp_path: Path) -> None:
    container = FakeContainer(load_delay=0.3)
    cache = _cache(tmp_path, ["a.tar.gz"], CachePolicy(memory_budget=1 << 30, load_wait=0.05), container)

    async def flow() -> bytes:
        with pytest.raises(TargetModelNotReady):
            await cache.invoke([(b"x-amzn-sagemaker-target-model", b"a.tar.gz")], b"", 5)
        await asyncio.sleep(0.4)
        return (await cache.invoke([(b"x-amzn-sagemaker-target-model", b"a.tar.gz")], b"", 5)).body

    assert asyncio.run(flow()) == b"a.tar.gz" and container.loads == 1


def test_disk_tier_lru_by_bytes(tmp_path: Path) -> None:
    src = tmp_path / "bucket" / "p"
    src.mkdir(parents=True)
    for n in ("a", "b", "c"):
        (src / f"{n}.tar.gz").write_bytes(tarball({"blob": "x" * 1000}))
    disk = DiskTier(ArtifactCache(FileBlobs(), tmp_path / "c"), tmp_path / "disk", str(src) + "/", 2500, 1 << 30)

    async def flow() -> None:
        a, took = await disk.fetch("a.tar.gz")
        assert took is not None and (a / "blob").stat().st_size == 1000
        assert (await disk.fetch("a.tar.gz"))[1] is None  # on disk already
        await disk.fetch("b.tar.gz")
        disk.pin("a.tar.gz")
        await disk.fetch("c.tar.gz")  # over 2500 bytes: b goes (a is pinned, c is new)
        assert list(disk.entries) == ["a.tar.gz", "c.tar.gz"] and disk.deleted == 1
        disk.unpin("a.tar.gz")
        with pytest.raises(TargetModelMissing):
            await disk.fetch("../p/a.tar.gz")

    asyncio.run(flow())


# --- the multi-model container contract (serving/multimodel.py), over ASGI


def _call(app: Any, method: str, path: str, body: bytes = b"", query: bytes = b"") -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query,
             "headers": [(b"content-type", b"text/csv")]}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_multi_model_container_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import joblib
    from sklearn.linear_model import LinearRegression

    from modelhost.serving.multimodel import MultiModelApp
    from tests.helpers import diabetes

    monkeypatch.setenv("MODELHOST_RUNTIME", "sklearn")
    x, y = diabetes()
    for name, shift in (("one", 0.0), ("two", 100.0)):
        (tmp_path / name).mkdir()
        joblib.dump(LinearRegression().fit(x, y + shift), tmp_path / name / "model.joblib")
    (tmp_path / "oom" / "code").mkdir(parents=True)
    (tmp_path / "oom" / "code" / "inference.py").write_text("def model_fn(d):\n    raise MemoryError()\n")
    app = MultiModelApp()
    for name in ("one", "two"):
        doc = json.dumps({"model_name": name, "url": str(tmp_path / name)}).encode()
        assert _call(app, "POST", "/models", doc)[0] == 200
    assert _call(app, "POST", "/models", json.dumps({"model_name": "one", "url": "x"}).encode())[0] == 409
    oom = json.dumps({"model_name": "oom", "url": str(tmp_path / "oom")}).encode()
    assert _call(app, "POST", "/models", oom)[0] == 507
    status, page = _call(app, "GET", "/models", query=b"limit=1")
    assert status == 200 and json.loads(page)["models"] == [{"modelName": "one", "modelUrl": str(tmp_path / "one")}]
    token = json.loads(page)["nextPageToken"]
    rest = json.loads(_call(app, "GET", "/models", query=f"limit=1&next_page_token={token}".encode())[1])
    assert [m["modelName"] for m in rest["models"]] == ["two"] and "nextPageToken" not in rest
    assert json.loads(_call(app, "GET", "/models/two")[1])["modelName"] == "two"
    row = ",".join(str(v) for v in x[0]).encode()
    status, out = _call(app, "POST", "/models/two/invoke", row)
    assert status == 200 and abs(json.loads(out)[0] - (LinearRegression().fit(x, y + 100).predict(x[:1])[0])) < 1e-6
    assert _call(app, "DELETE", "/models/two")[0] == 200
    assert _call(app, "GET", "/models/two")[0] == 404
    assert _call(app, "POST", "/models/two/invoke", row)[0] == 404
    assert _call(app, "DELETE", "/models/two")[0] == 404
