"""Keep-alive timeouts of a server's idle connections, kept by one coarse timer.

uvicorn arms a timer (``loop.call_later``) after every response and cancels it when the next request
arrives. With uvloop that pair costs ~4 µs — about as much as the fast path's own routing of a cheap
InvokeEndpoint — so the guarded protocol (connections.py) records when each connection went idle
instead, and one timer per server closes those idle for ``timeout`` seconds. A connection is closed
between ``timeout`` and ``timeout + interval`` after its last response, as uvicorn closes it then.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class IdleConnection(Protocol):
    def timeout_keep_alive_handler(self) -> None:
        """Close the connection (uvicorn's handler: unless it is already closing)."""


class IdleConnections:
    def __init__(self, timeout: float, interval: float = 0.5) -> None:
        self.timeout = timeout
        self.interval = min(interval, timeout)
        self.since: dict[IdleConnection, float] = {}  # idle connection -> when its last response went out
        self._timer: asyncio.TimerHandle | None = None

    def idle(self, conn: IdleConnection, loop: asyncio.AbstractEventLoop) -> None:
        self.since[conn] = loop.time()
        if self._timer is None:
            self._timer = loop.call_later(self.interval, self._sweep, loop)

    def busy(self, conn: IdleConnection) -> None:
        """A request arrived on ``conn`` (or it closed): it is no longer idle."""
        self.since.pop(conn, None)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        cutoff = loop.time() - self.timeout
        for conn, since in list(self.since.items()):
            if since <= cutoff:
                del self.since[conn]
                conn.timeout_keep_alive_handler()
        if self.since:
            self._timer = loop.call_later(self.interval, self._sweep, loop)
