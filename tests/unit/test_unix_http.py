"""The router-to-instance HTTP client (backends/local/http.py) against a tiny unix-socket server,
in the test's own event loop, that closes connections at chosen moments (no model processes).

A request is sent again (once, on a fresh connection) exactly when the instance never read it: a
reused keep-alive connection closed under the pool (the instance's idle timeout firing as the pool
writes, or its process killed with the request still in the socket). A request the instance read
and then died on is never sent twice: that is ConnectionLost (a ModelError for the caller).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvloop

from modelhost.backends.handle import ReplicaLost, ReplicaUnreachable
from modelhost.backends.local.fleet import Fleet
from modelhost.backends.local.http import (
    SWEEP_INTERVAL,
    ConnectError,
    ConnectionLost,
    NotDelivered,
    RequestTimeout,
    UnixHttpPool,
)
from modelhost.backends.local.instances import InstanceSpec
from modelhost.store.logs import EndpointLog

TIMEOUT = 5.0
Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Run a coroutine on the stdlib loop and on uvloop (what the server uses)."""
    if request.param == "uvloop":
        return uvloop.run
    return asyncio.run


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mh-uh-") as d:  # short: unix socket paths are limited
        yield Path(d)


class _Conn(asyncio.Protocol):
    def __init__(self, server: TinyServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.append(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, rest = self.buf.split(b"\r\n\r\n", 1)
            match = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
            length = int(match.group(1)) if match else 0
            if len(rest) < length:
                return
            body, self.buf = rest[:length], rest[length:]
            self.server.read.append(body)
            if body.startswith(b"hang"):  # read, never answered (a hung model)
                continue
            action = self.server.on_request
            if action == "drop":  # read the request, then went away without a word
                self.transport.close()
                return
            if action == "partial":  # started answering, then went away
                self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf")
                self.transport.close()
                return
            answer = b"ok:" + body
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer))
            if self.server.hold_after_answer:
                self.transport.pause_reading()  # the next request stays unread in the socket


class TinyServer:
    """HTTP/1.1 on a unix socket. ``read``: every request body it read, in order; ``conns``: every
    connection it accepted. ``hold_after_answer``: stop reading a connection once it answered;
    ``on_request``: "answer", "drop" (close after reading) or "partial" (close mid-answer)."""

    def __init__(self) -> None:
        self.read: list[bytes] = []
        self.conns: list[_Conn] = []
        self.hold_after_answer = False
        self.on_request = "answer"
        self._server: asyncio.AbstractServer | None = None

    async def start(self, path: Path) -> TinyServer:
        self.path = path
        self._server = await asyncio.get_running_loop().create_unix_server(lambda: _Conn(self), str(path))
        return self

    def stop_accepting(self, close_after: float) -> None:
        """From now on the socket path is a listener that never accepts (connections wait in its
        backlog, what they send unread) and is closed after ``close_after`` seconds: a process
        killed with requests queued for it."""
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(8)
        asyncio.get_running_loop().call_later(close_after, listener.close)

    def transport(self, index: int) -> asyncio.Transport:
        transport = self.conns[index].transport
        assert transport is not None
        return transport

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1)


async def _setup(sock_dir: Path) -> tuple[TinyServer, UnixHttpPool]:
    path = sock_dir / "s.sock"
    server = await TinyServer().start(path)
    return server, UnixHttpPool(str(path))


async def _post(pool: UnixHttpPool, body: bytes) -> bytes:
    return (await pool.request(b"POST", b"/invocations", [], body, TIMEOUT)).body


def test_reused_connection_closed_unread_is_retried_on_a_fresh_one(run: Run, sock_dir: Path) -> None:
    """The keep-alive race: the instance closes an idle connection just after the pool wrote a
    request on it. The request was never read (ECONNRESET): sent again on a fresh connection, once."""

    async def main() -> None:
        server, pool = await _setup(sock_dir)
        server.hold_after_answer = True
        assert await _post(pool, b"one") == b"ok:one"
        asyncio.get_running_loop().call_soon(server.transport(0).close)  # fires after the write below
        assert await _post(pool, b"two") == b"ok:two"
        assert server.read == [b"one", b"two"]  # read once each
        assert len(server.conns) == 2
        await pool.close()
        await server.stop()

    run(main())


def test_reused_connection_shut_before_the_write_is_retried(run: Run, sock_dir: Path) -> None:
    """The instance closed the idle connection before the pool wrote, and the pool has not seen the
    EOF yet: the write fails (EPIPE), nothing was read; retried on a fresh connection."""

    async def main() -> None:
        server, pool = await _setup(sock_dir)
        assert await _post(pool, b"one") == b"ok:one"
        fd = server.transport(0).get_extra_info("socket").fileno()
        with socket.socket(fileno=os.dup(fd)) as sock:  # uvloop's transport sockets refuse shutdown()
            sock.shutdown(socket.SHUT_RDWR)  # the socket, not the descriptor: the peer sees it at once
        assert await _post(pool, b"two") == b"ok:two"
        assert server.read == [b"one", b"two"]
        assert len(server.conns) == 2
        await pool.close()
        await server.stop()

    run(main())


def test_idle_connection_seen_closing_is_never_written(run: Run, sock_dir: Path) -> None:
    """An idle connection whose transport is closing (EOF seen, connection_lost still pending) is
    dropped when picked; the request goes on a fresh connection."""

    async def main() -> None:
        server, pool = await _setup(sock_dir)
        assert await _post(pool, b"one") == b"ok:one"
        (idle,) = pool._idle
        assert idle.transport is not None
        idle.transport.close()  # closing, connection_lost not run yet
        assert await _post(pool, b"two") == b"ok:two"
        assert server.read == [b"one", b"two"]
        await pool.close()
        await server.stop()

    run(main())


def test_idle_connection_closed_long_before_is_not_a_failure(run: Run, sock_dir: Path) -> None:
    async def main() -> None:
        server, pool = await _setup(sock_dir)
        assert await _post(pool, b"one") == b"ok:one"
        server.transport(0).close()
        await asyncio.sleep(0.05)  # the pool sees the EOF and forgets the connection
        assert not pool._idle
        assert await _post(pool, b"two") == b"ok:two"
        await pool.close()
        await server.stop()

    run(main())


@pytest.mark.parametrize("action", ["drop", "partial"])
def test_request_read_then_lost_is_not_retried(run: Run, sock_dir: Path, action: str) -> None:
    """The instance read the request (it may have run it) and went away: ConnectionLost, sent once."""

    async def main() -> None:
        server, pool = await _setup(sock_dir)
        assert await _post(pool, b"one") == b"ok:one"
        server.on_request = action
        with pytest.raises(ConnectionLost) as info:
            await _post(pool, b"two")
        assert not isinstance(info.value, ConnectError)
        assert server.read == [b"one", b"two"]
        assert len(server.conns) == 1
        await pool.close()
        await server.stop()

    run(main())


def test_fresh_connection_lost_on_first_request_read_is_not_retried(run: Run, sock_dir: Path) -> None:
    async def main() -> None:
        server, pool = await _setup(sock_dir)
        server.on_request = "drop"
        with pytest.raises(ConnectionLost):
            await _post(pool, b"one")
        assert server.read == [b"one"]
        assert len(server.conns) == 1
        await pool.close()
        await server.stop()

    run(main())


def test_fresh_connection_closed_unread_is_not_delivered(run: Run, sock_dir: Path) -> None:
    """Accepted but never read (a request queued on an instance that is killed): NotDelivered, a
    ConnectError, so the fleet reports ReplicaUnreachable and the router tries another instance.
    The pool itself does not retry a fresh connection."""

    async def main() -> None:
        server, pool = await _setup(sock_dir)
        server.stop_accepting(close_after=0.05)
        with pytest.raises(NotDelivered):
            await _post(pool, b"one")
        assert server.read == []
        await pool.close()
        await server.stop()

    run(main())


def test_retry_is_once(run: Run, sock_dir: Path) -> None:
    """The reused connection and then the fresh one are both closed unread: NotDelivered."""

    async def main() -> None:
        server, pool = await _setup(sock_dir)
        server.hold_after_answer = True
        assert await _post(pool, b"one") == b"ok:one"
        server.stop_accepting(close_after=0.05)  # the fresh connection is not read either
        asyncio.get_running_loop().call_soon(server.transport(0).close)
        with pytest.raises(NotDelivered):
            await _post(pool, b"two")
        assert server.read == [b"one"]
        assert len(server.conns) == 1
        await pool.close()
        await server.stop()

    run(main())


def test_connect_refused_is_connect_error(run: Run, sock_dir: Path) -> None:
    async def main() -> None:
        pool = UnixHttpPool(str(sock_dir / "nobody.sock"))
        with pytest.raises(ConnectError):
            await _post(pool, b"one")

    run(main())


def test_keep_alive_reuses_one_connection(run: Run, sock_dir: Path) -> None:
    async def main() -> None:
        server, pool = await _setup(sock_dir)
        for i in range(5):
            assert await _post(pool, b"%d" % i) == b"ok:%d" % i
        assert len(server.conns) == 1
        await pool.close()
        await server.stop()

    run(main())


# --- the fleet's words for them ----------------------------------------------------------------


def _fleet(tmp: Path) -> tuple[Fleet, EndpointLog]:
    log = EndpointLog(tmp / "logs", "ep")
    spec = InstanceSpec(endpoint="ep", variant="v", model_dir=tmp, runtime="python", environment={}, startup_timeout=1)
    return Fleet(spec, 0, tmp, log, ping_interval=0.01), log


def test_fleet_maps_not_delivered_to_unreachable_and_a_loss_to_lost(run: Run, sock_dir: Path) -> None:
    async def main() -> None:
        server, pool = await _setup(sock_dir)
        fleet, log = _fleet(sock_dir)
        replica: Any = SimpleNamespace(name="v/0", client=pool, outstanding=0, exit_reason=None)
        server.on_request = "drop"
        with pytest.raises(ReplicaLost, match="the instance closed the connection"):
            await fleet.invoke(replica, [], b"x", TIMEOUT)
        server.stop_accepting(close_after=0.05)
        with pytest.raises(ReplicaUnreachable, match="before reading the request"):
            await fleet.invoke(replica, [], b"x", TIMEOUT)
        await pool.close()
        await server.stop()
        log.close()

    run(main())


def test_an_instance_marked_unreachable_that_still_answers_comes_back(run: Run, sock_dir: Path) -> None:
    """mark_unreachable takes an instance out of rotation; if its process is alive and answers
    /ping, the watchdog puts it back (a dead one is restarted by its supervisor instead)."""

    async def main() -> None:
        fleet, log = _fleet(sock_dir)

        class FakeInstance:
            name = "v/0"
            healthy = True
            stopping = False
            outstanding = 0
            proc = SimpleNamespace(returncode=None)

            async def ping(self) -> bool:
                return True

        inst: Any = FakeInstance()
        fleet.instances = [inst]
        fleet.mark_unreachable(inst)
        assert not inst.healthy and fleet.acquire_now() is None
        watchdog = asyncio.create_task(fleet._watch_pings(inst))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if inst.healthy:
                break
        watchdog.cancel()
        assert inst.healthy and fleet.acquire_now() is inst
        log.close()
        assert "back in service" in log.path.read_text()

    run(main())


def test_worker_keeps_idle_connections_open(run: Run, sock_dir: Path) -> None:
    """The instance side: an idle-connection timeout (uvicorn's is 5 s by default) is what closed
    connections under the pool; the instance's own server (serving/wire.py) has none, and answers
    on a connection that sat idle."""
    from modelhost.serving.wire import Exchange, InstanceServer

    class Echo:
        def handle(self, exchange: Exchange) -> None:
            exchange.respond(200, [(b"content-type", b"text/plain")], exchange.body)

    async def main() -> None:
        server = InstanceServer(Echo())
        path = str(sock_dir / "w.sock")
        serving = asyncio.create_task(server.serve(path))
        while not os.path.exists(path):
            await asyncio.sleep(0.01)
        pool = UnixHttpPool(path)
        first = await pool.request(b"POST", b"/invocations", [], b"one", 5)
        await asyncio.sleep(1.5)
        second = await pool.request(b"POST", b"/invocations", [], b"two", 5)
        assert (first.body, second.body) == (b"one", b"two")
        assert len(pool._all) == 1  # the same connection both times
        await pool.close()
        await server.stop()
        await serving

    run(main())


def test_a_request_the_instance_never_answers_times_out_and_its_connection_is_not_reused(
    run: Run, sock_dir: Path
) -> None:
    async def go() -> tuple[float, bytes, int]:
        server, pool = await _setup(sock_dir)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RequestTimeout):
            await pool.request(b"POST", b"/invocations", [], b"hang", 0.3)
        waited = loop.time() - started
        after = await _post(pool, b"next")  # a fresh connection: the timed-out one may still get its answer
        await pool.close()
        await server.stop()
        return waited, after, len(server.conns)

    waited, after, conns = run(go())
    assert 0.3 <= waited < 0.3 + SWEEP_INTERVAL + 0.5
    assert after == b"ok:next"
    assert conns == 2


def test_a_short_timeout_fires_on_time_beside_a_long_one_and_answers_go_on(run: Run, sock_dir: Path) -> None:
    """One sweep timer serves every request in flight: a later, shorter deadline still fires on time."""

    async def go() -> tuple[float, list[bytes]]:
        server, pool = await _setup(sock_dir)
        loop = asyncio.get_running_loop()
        long = loop.create_task(pool.request(b"POST", b"/invocations", [], b"hang-long", 30.0))
        await asyncio.sleep(0.05)
        started = loop.time()
        short = loop.create_task(pool.request(b"POST", b"/invocations", [], b"hang-short", 0.3))
        answers = [await _post(pool, b"%d" % i) for i in range(20)]
        with pytest.raises(RequestTimeout):
            await short
        waited = loop.time() - started
        assert not long.done()
        long.cancel()
        await pool.close()
        await server.stop()
        return waited, answers

    waited, answers = run(go())
    assert 0.3 <= waited < 0.3 + SWEEP_INTERVAL + 0.5
    assert answers == [b"ok:%d" % i for i in range(20)]
