"""A follower's view of the leader's local instances (backends/local/attached.py) against tiny
unix-socket HTTP servers in the test's own loop: requests go to the published sockets, a socket
that refuses is out of rotation for a moment, republication adds and drops instances, and the
leader's work (start, scale) is refused."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import pytest

from modelhost.backends.handle import ReplicaFailed, ReplicaUnreachable
from modelhost.backends.local.attached import UNREACHABLE_FOR, AttachedFleet, LocalAttachment
from modelhost.backends.local.fleet import Fleet
from modelhost.backends.local.instances import InstanceSpec
from modelhost.resources.front_doors import FleetLocator, ReplicaAddress
from modelhost.store.logs import EndpointLog


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP/1.1 keep-alive: every request answered with the socket's name."""
    name = writer.get_extra_info("sockname").rsplit("/", 1)[-1].encode()
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s" % (len(name), name)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionResetError):
        writer.close()


def test_requests_go_to_the_published_sockets(tmp_path: Path) -> None:
    log = EndpointLog(tmp_path / "logs", "ep")

    async def body() -> None:
        with tempfile.TemporaryDirectory(prefix="mh-at-") as d:
            alive, dead = Path(d) / "a.sock", Path(d) / "b.sock"
            server = await asyncio.start_unix_server(answer, path=str(alive))
            locator = FleetLocator(
                "local", (ReplicaAddress("v/0", str(alive), True), ReplicaAddress("v/1", str(dead), True))
            )
            fleet = LocalAttachment(Path(d)).attach("v", locator, log)
            assert isinstance(fleet, AttachedFleet)
            assert (fleet.size, fleet.healthy_count) == (2, 2)
            with pytest.raises(ReplicaFailed):
                await fleet.start()
            with pytest.raises(ReplicaFailed):
                await fleet.scale_to(3, 0)

            first = await fleet.acquire(1)  # least outstanding: a, then (a busy) b
            second = await fleet.acquire(1)
            assert first is not None and second is not None and {first.name, second.name} == {"v/0", "v/1"}
            by_name = {first.name: first, second.name: second}
            resp = await fleet.invoke(by_name["v/0"], [(b"content-type", b"text/csv")], b"1,2", 5)
            assert resp.status == 200 and resp.body == b"a.sock"
            with pytest.raises(ReplicaUnreachable):
                await fleet.invoke(by_name["v/1"], [], b"1,2", 5)
            fleet.mark_unreachable(by_name["v/1"])  # what the router does
            fleet.release(first)
            fleet.release(second)
            assert [r.name for r in fleet.replicas() if r.available] == ["v/0"]  # b out of rotation for a moment
            time.sleep(UNREACHABLE_FOR)
            assert fleet.acquire_now() is not None and sum(r.available for r in fleet.replicas()) == 2

            # Republished: b gone, a unhealthy (restarting) -> nothing to acquire; healthy again -> back.
            fleet.update(FleetLocator("local", (ReplicaAddress("v/0", str(alive), False),)))
            assert fleet.size == 1 and fleet.acquire_now() is None
            fleet.update(FleetLocator("local", (ReplicaAddress("v/0", str(alive), True),)))
            replica = await fleet.acquire(1)
            assert replica is not None
            assert (await fleet.invoke(replica, [], b"x", 5)).body == b"a.sock"
            fleet.release(replica)

            # Not reachable from another front door (a pipeline, say): answered at once, never waited for.
            fleet.update(FleetLocator(""))
            started = time.monotonic()
            assert await fleet.acquire(5) is None
            assert time.monotonic() - started < 0.5
            await fleet.stop(0)
            server.close()
            await server.wait_closed()
            assert alive.exists()  # the leader's socket is never unlinked by a follower

    asyncio.run(body())


def test_the_leader_locates_plain_instances_only(tmp_path: Path) -> None:
    log = EndpointLog(tmp_path / "logs", "ep")
    spec = InstanceSpec(
        endpoint="ep", variant="v", model_dir=tmp_path, runtime="sklearn", environment={}, startup_timeout=1
    )
    fleet = Fleet(spec, 2, tmp_path, log, ping_interval=1)
    fleet.instances[0].healthy = True
    attachment = LocalAttachment(tmp_path)
    located = attachment.locate(fleet)
    assert located.kind == "local"
    assert [(r.name, r.address) for r in located.replicas] == [(i.name, str(i.socket_path)) for i in fleet.instances]
    assert [r.healthy for r in located.replicas] == [False, False]  # no client yet: not available
    assert attachment.locate(object()).kind == ""  # type: ignore[arg-type]
