"""The instance's own HTTP/1.1 server (serving/wire.py), the quick-model policy of the worker, and the
lock-free metric children (hosting/metrics.LoopFamily), over a real unix socket where there is one."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest
import uvloop
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from modelhost.backends.local.http import UnixHttpPool, stream_request
from modelhost.hosting import metrics
from modelhost.serving.wire import Exchange, InstanceServer
from modelhost.serving.worker import App, InlinePolicy


@pytest.fixture
def sock_path() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="mh-wire-") as d:
        yield os.path.join(d, "w.sock")


class Echo:
    """/echo answers the body; /stream streams three parts then ends; /hold answers when released."""

    def __init__(self) -> None:
        self.disconnected = asyncio.Event()
        self.release = asyncio.Event()

    def handle(self, exchange: Exchange) -> None:
        if exchange.path == b"/echo":
            exchange.respond(200, [(b"content-type", b"text/plain")], exchange.body)
        elif exchange.path == b"/big":
            exchange.respond(200, [], b"x" * 200_000)
        else:
            asyncio.get_running_loop().create_task(self._slow(exchange))

    async def _slow(self, exchange: Exchange) -> None:
        receive, send = exchange.asgi()
        assert (await receive())["body"] == exchange.body
        if exchange.path == b"/hold":
            await self.release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
            await send({"type": "http.response.body", "body": b"held"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"x/y")]})
        for part in (b"one", b"two", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        if exchange.path == b"/stream-forever":
            assert (await receive())["type"] == "http.disconnect"
            self.disconnected.set()
            return
        await send({"type": "http.response.body", "body": b""})


async def _serving(app: Echo, path: str) -> tuple[InstanceServer, asyncio.Task[None]]:
    server = InstanceServer(app)
    task = asyncio.create_task(server.serve(path))
    while not os.path.exists(path):
        await asyncio.sleep(0.01)
    return server, task


def test_answers_keep_alive_big_bodies_head_and_chunked_streams(sock_path: str) -> None:
    async def main() -> None:
        app = Echo()
        server, task = await _serving(app, sock_path)
        pool = UnixHttpPool(sock_path)
        for i in range(3):  # one connection, reused
            r = await pool.request(b"POST", b"/echo", [(b"content-type", b"text/csv")], b"row%d" % i, 5)
            assert (r.status, r.body, r.headers[b"content-type"]) == (200, b"row%d" % i, b"text/plain")
        assert len(pool._all) == 1
        big = await pool.request(b"GET", b"/big", [], b"", 5)
        assert big.body == b"x" * 200_000
        body = b"b" * 300_000  # arrives in several reads
        assert (await pool.request(b"POST", b"/echo", [], body, 5)).body == body
        head = await pool.request(b"HEAD", b"/echo", [], b"", 5)
        assert head.status == 200 and head.body == b""

        async def one_chunk() -> object:
            yield b""

        streamed = await stream_request(sock_path, b"POST", b"/stream", [], 0, one_chunk())
        assert streamed.status == 200 and streamed.headers[b"transfer-encoding"] == b"chunked"
        assert b"".join([c async for c in streamed.chunks()]) == b"onetwothree"
        streamed.close()
        await pool.close()
        await server.stop()
        await task

    uvloop.run(main())


def test_pipelined_requests_answer_in_order_and_bad_requests_get_400(sock_path: str) -> None:
    async def main() -> None:
        server, task = await _serving(Echo(), sock_path)
        reader, writer = await asyncio.open_unix_connection(sock_path)
        writer.write(
            b"POST /echo HTTP/1.1\r\ncontent-length: 1\r\n\r\nA" + b"POST /echo HTTP/1.1\r\ncontent-length: 1\r\n\r\nB"
        )
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"B"):
            data += await asyncio.wait_for(reader.read(65536), 5)
        assert data.index(b"\r\n\r\nA") < data.index(b"\r\n\r\nB")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), 5)  # answered, then closed
        assert rest.startswith(b"HTTP/1.1 400 ") and b"invalid HTTP request" in rest
        writer.close()
        await server.stop()
        await task

    uvloop.run(main())


def test_a_hang_up_reaches_a_streamed_answer_and_stop_waits_for_requests_in_flight(sock_path: str) -> None:
    async def main() -> None:
        app = Echo()
        server, task = await _serving(app, sock_path)
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(sock_path)
        sock.sendall(b"POST /stream-forever HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
        await asyncio.sleep(0.1)
        sock.close()
        await asyncio.wait_for(app.disconnected.wait(), 5)

        pool = UnixHttpPool(sock_path)
        held = asyncio.create_task(pool.request(b"POST", b"/hold", [], b"", 5))
        await asyncio.sleep(0.1)
        stopping = asyncio.create_task(server.stop(grace=5))
        await asyncio.sleep(0.1)
        assert not stopping.done()  # the request in flight holds the stop
        app.release.set()
        assert (await held).body == b"held"
        await stopping
        await task
        with pytest.raises(OSError):  # no longer listening
            socket.socket(socket.AF_UNIX).connect(sock_path)
        await pool.close()

    uvloop.run(main())


def test_inline_policy_needs_a_streak_of_quick_small_calls_and_leaves_on_a_slow_one() -> None:
    policy = InlinePolicy()
    small, large = b"1,2,3", b"x" * (InlinePolicy.QUICK_BODY + 1)
    for _ in range(InlinePolicy.QUICK_STREAK - 1):
        policy.observe(0.0001, 0.003, small)  # preempted for a while: still quick
    assert not policy.inline(small)
    policy.observe(0.0001, 0.0001, small)
    assert policy.inline(small) and not policy.inline(large)
    policy.observe(0.5, 0.5, small)  # one slow call: back to the model thread
    assert not policy.inline(small)
    policy.streak = InlinePolicy.QUICK_STREAK
    policy.observe(0.0001, 0.2, small)  # little CPU but a long wait (I/O, sleep): not quick either
    assert not policy.inline(small)


def test_inline_policy_on_the_loop_reads_the_cpu_clock_only_after_an_unclear_call() -> None:
    """On the loop the CPU time is not read (None): a call within QUICK_CPU of wall time is quick; one
    between the bounds keeps the streak but makes the next calls read it, and a slow one of those leaves."""
    policy = InlinePolicy()
    small = b"1,2,3"
    for _ in range(InlinePolicy.QUICK_STREAK):
        policy.observe(None, 0.0002, small)
    assert policy.inline(small) and policy.verify == 0
    policy.observe(None, 0.004, small)  # preempted, or slow: unknown without the CPU clock
    assert policy.inline(small) and policy.verify == InlinePolicy.VERIFY_CALLS
    policy.observe(0.0002, 0.004, small)  # measured: it was preempted
    assert policy.inline(small) and policy.verify == InlinePolicy.VERIFY_CALLS - 1
    policy.observe(0.004, 0.004, small)  # measured: slow, back to the model thread
    assert not policy.inline(small)
    policy.streak = InlinePolicy.QUICK_STREAK
    policy.observe(None, 0.02, small)  # past QUICK_WALL: no clock needed to leave
    assert not policy.inline(small)


class Constant:
    """A stand-in for the serving Handler: answers at once."""

    def invoke(self, body: bytes, *_: object) -> tuple[bytes, str, None]:
        return body, "text/csv", None


def test_an_inline_quick_call_reads_no_cpu_clock(sock_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """time.thread_time is a system call (the wall clock is not): none per request once a quick model
    runs on the loop."""
    reads: list[int] = []
    thread_time = time.thread_time

    def counted() -> float:
        reads.append(threading.get_ident())
        return thread_time()

    async def main() -> None:
        app = App(Constant(), threads=None)  # type: ignore[arg-type]
        assert app.policy is not None
        app.policy.streak = InlinePolicy.QUICK_STREAK
        server = InstanceServer(app)
        task = asyncio.create_task(server.serve(sock_path))
        while not os.path.exists(sock_path):
            await asyncio.sleep(0.01)
        pool = UnixHttpPool(sock_path)
        monkeypatch.setattr(time, "thread_time", counted)
        for i in range(20):
            answer = await pool.request(b"POST", b"/invocations", [], b"%d" % i, 10)
            assert answer.body == b"%d" % i
        monkeypatch.setattr(time, "thread_time", thread_time)
        assert app.policy.inline(b"x")
        await pool.close()
        await server.stop()
        await task

    uvloop.run(main())
    assert reads.count(threading.get_ident()) <= InlinePolicy.VERIFY_CALLS  # a preempted call may ask for some


class Held:
    """A stand-in Handler (no input_fn: invoke_batch runs it request by request) that waits for ``release``
    on a request whose body is ``block``."""

    predict_fn = input_fn = output_fn = None

    def __init__(self) -> None:
        self.release = threading.Event()

    def invoke(self, body: bytes, *_: object) -> tuple[bytes, str, None]:
        if body == b"block":
            self.release.wait(5)
        if body == b"bad":
            raise ValueError("bad input")
        return body.upper(), "text/csv", None


def test_batched_requests_queue_without_a_task_each_and_get_their_own_answers(sock_path: str) -> None:
    from modelhost.serving.batching import BatchSettings

    async def main() -> None:
        handler = Held()
        app = App(handler, threads=1, batching=BatchSettings(8, 0.01))  # type: ignore[arg-type]
        server = InstanceServer(app)
        task = asyncio.create_task(server.serve(sock_path))
        while not os.path.exists(sock_path):
            await asyncio.sleep(0.01)
        pool = UnixHttpPool(sock_path)
        held = asyncio.ensure_future(pool.request(b"POST", b"/invocations", [], b"block", 10))
        await asyncio.sleep(0.05)
        baseline = len(asyncio.all_tasks())
        rest = [asyncio.ensure_future(pool.request(b"POST", b"/invocations", [], b, 10)) for b in (b"a", b"bad", b"c")]
        await asyncio.sleep(0.05)
        assert app.batcher is not None and len(app.batcher._queue) == 3  # all three wait for the model
        # the clients' own three tasks, and nothing in the instance for them
        assert len(asyncio.all_tasks()) == baseline + 3
        handler.release.set()
        assert (await held).body == b"BLOCK"
        a, bad, c = await asyncio.gather(*rest)
        assert (a.status, a.body, c.body) == (200, b"A", b"C")
        assert bad.status == 500 and b"ValueError: bad input" in bad.body
        await pool.close()
        await server.stop()
        await task

    uvloop.run(main())


class QuickModel:
    """A stand-in for the serving Handler (its ``invoke`` interface): ~0.6 ms of CPU per call, noting the
    thread each call ran on."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def invoke(self, body: bytes, *_: object) -> tuple[bytes, str, None]:
        self.threads.append(threading.current_thread().name)
        end = time.thread_time() + 0.0006
        while time.thread_time() < end:
            pass
        return body, "text/csv", None


def test_a_quick_model_goes_inline_even_when_requests_queue_for_the_model_thread(sock_path: str) -> None:
    """32 requests at a time: each waits behind the others for the one model thread (~19 ms), yet the
    call itself is quick, so the policy must judge the call, not the wait in the executor's queue."""

    async def main() -> None:
        model = QuickModel()
        app = App(model, threads=None)  # type: ignore[arg-type]
        server = InstanceServer(app)
        task = asyncio.create_task(server.serve(sock_path))
        while not os.path.exists(sock_path):
            await asyncio.sleep(0.01)
        pool = UnixHttpPool(sock_path)
        for _ in range(6):
            answers = await asyncio.gather(
                *(pool.request(b"POST", b"/invocations", [], b"%d" % i, 10) for i in range(32))
            )
            assert [a.body for a in answers] == [b"%d" % i for i in range(32)]
        assert model.threads[0].startswith("model")
        assert set(model.threads[-32:]) == {threading.current_thread().name}
        await pool.close()
        await server.stop()
        await task

    uvloop.run(main())


def test_loop_family_exposes_what_prometheus_client_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same sample names, labels, bucket boundaries and values as prometheus_client's own types."""
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    monkeypatch.setattr(metrics, "REGISTRY", ours_registry)
    counter = metrics.LoopFamily("t_calls", "calls")
    histogram = metrics.LoopFamily("t_latency", "latency", metrics.MICROSECOND_BUCKETS)
    their_counter = Counter("t_calls", "calls", metrics.LABELS, registry=theirs_registry)
    their_histogram = Histogram(
        "t_latency", "latency", metrics.LABELS, buckets=metrics.MICROSECOND_BUCKETS, registry=theirs_registry
    )
    for value in (50, 100, 101, 999, 1e9):
        for child in (histogram.labels("e", "v"), their_histogram.labels("e", "v")):
            child.observe(value)
    for child in (counter.labels("e", "v"), their_counter.labels("e", "v")):
        child.inc()
        child.inc(2)
    assert counter.labels("e", "v") is counter.labels("e", "v")  # one child per label set

    def samples(registry: CollectorRegistry) -> set[str]:
        return {
            line
            for line in generate_latest(registry).decode().splitlines()
            if line and not line.startswith("#") and "_created" not in line
        }

    assert samples(ours_registry) == samples(theirs_registry)
