"""The front door's keep-alive timeouts (server/middleware/keep_alive.py): one timer per server closes
the connections idle for the timeout; a connection that got a request meanwhile stays open."""

from __future__ import annotations

import asyncio

import uvloop

from modelhost.server.middleware.keep_alive import IdleConnections


class _Conn:
    def __init__(self) -> None:
        self.closed_at: float | None = None

    def timeout_keep_alive_handler(self) -> None:
        self.closed_at = asyncio.get_running_loop().time()


def test_idle_connections_close_after_the_timeout_and_busy_ones_stay_open() -> None:
    async def go() -> tuple[float, list[float | None]]:
        loop = asyncio.get_running_loop()
        idle = IdleConnections(0.3, interval=0.05)
        quiet, busy, later = _Conn(), _Conn(), _Conn()
        started = loop.time()
        idle.idle(quiet, loop)
        idle.idle(busy, loop)
        await asyncio.sleep(0.15)
        idle.busy(busy)  # a request arrived on it
        idle.idle(later, loop)
        await asyncio.sleep(0.6)
        return started, [quiet.closed_at, busy.closed_at, later.closed_at]

    started, (quiet, busy, later) = uvloop.run(go())
    assert quiet is not None and 0.3 <= quiet - started < 0.3 + 0.05 + 0.2
    assert busy is None
    assert later is not None and 0.45 <= later - started < 0.45 + 0.05 + 0.2


def test_the_sweep_timer_stops_when_nothing_is_idle() -> None:
    async def go() -> int:
        loop = asyncio.get_running_loop()
        idle = IdleConnections(0.1, interval=0.02)
        conn = _Conn()
        idle.idle(conn, loop)
        await asyncio.sleep(0.3)
        # Closed, and forgotten: nothing is left for the sweep to re-arm for.
        assert conn.closed_at is not None
        return len(idle.since)

    assert uvloop.run(go()) == 0
