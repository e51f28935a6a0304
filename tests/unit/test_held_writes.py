"""server/middleware/writes.py: a response's head and body leave in one write, nothing waits past the
loop's next turn, and closing never loses held bytes."""

from __future__ import annotations

import asyncio
from typing import Any

import uvloop

from modelhost.server.middleware.writes import HeldWrites


class RecordingTransport(asyncio.Transport):
    """A stand-in for the socket transport: records what reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        self.events.append("write")

    def close(self) -> None:
        self.events.append("close")

    def write_eof(self) -> None:
        self.events.append("eof")

    def abort(self) -> None:
        self.events.append("abort")

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1234) if name == "peername" else default


def test_head_and_body_go_out_together_and_a_lone_write_goes_out_on_the_next_turn() -> None:
    async def main() -> None:
        raw = RecordingTransport()
        held = HeldWrites(raw)
        held.write(b"HTTP/1.1 200 OK\r\n\r\n")
        held.write(b"body")
        assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        held.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")  # a streamed head: not held long
        assert len(raw.writes) == 1 and held.get_write_buffer_size() == 7 + 47
        await asyncio.sleep(0)
        assert raw.writes[1].endswith(b"chunked\r\n\r\n")
        await asyncio.sleep(0)  # the earlier turn's flush finds nothing more to send
        assert len(raw.writes) == 2
        assert held.get_extra_info("peername") == ("127.0.0.1", 1234)

    uvloop.run(main())


def test_close_and_eof_send_what_is_held_first_and_abort_drops_it() -> None:
    async def main() -> None:
        raw = RecordingTransport()
        held = HeldWrites(raw)
        held.write(b"last words")
        held.close()
        assert raw.events == ["write", "close"] and raw.writes == [b"last words"]
        raw2 = RecordingTransport()
        held2 = HeldWrites(raw2)
        held2.write(b"x")
        held2.write_eof()
        held2.write(b"y")
        held2.abort()
        await asyncio.sleep(0)
        assert raw2.events == ["write", "eof", "abort"] and raw2.writes == [b"x"]

    uvloop.run(main())
