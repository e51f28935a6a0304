"""One write per response: a transport wrapper for the front door's connections (connections.py uses it).

uvicorn writes a response's status line and headers as soon as the app sends ``http.response.start``
and the body on the next message: two send() calls and two TCP segments for every small answer
(profiled in bench/hop.py, the writes were a tenth of the front door's CPU per InvokeEndpoint). Here a
write is held until the next write on the connection, which goes out joined with it, or until the
event loop's next turn, so nothing waits longer than that and the order of bytes never changes.
"""

from __future__ import annotations

import asyncio
from typing import Any


class HeldWrites:
    """Wraps ``transport``; every other transport method passes through (``__getattr__``)."""

    __slots__ = ("_transport", "_held", "_loop")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        self._held = None
        self._transport.write(held + data)

    def write_now(self, data: bytes) -> None:
        """Write ``data`` at once, after whatever is held (a whole response needs no waiting)."""
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
