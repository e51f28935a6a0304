"""Incremental decoding of ``Content-Encoding: aws-chunked`` request bodies (streaming SigV4)."""

from __future__ import annotations

from modelhost.server.s3.xml import IncompleteBody


class AwsChunkedDecoder:
    """Incremental decoder for ``Content-Encoding: aws-chunked`` bodies (streaming SigV4, signed
    or unsigned, with or without trailers): ``<hex size>[;chunk-signature=...]\\r\\n<data>\\r\\n``
    ... ``0[;...]\\r\\n`` then trailer lines ``name:value\\r\\n`` and an empty line. Chunk
    signatures are not verified (credentials are not checked anywhere yet)."""

    MAX_LINE = 8192
    SIZE, DATA, DATA_END, TRAILER, DONE = range(5)

    def __init__(self) -> None:
        self._line = bytearray()
        self._state = self.SIZE
        self._remaining = 0
        self.trailers: dict[str, str] = {}
        self.decoded = 0

    @property
    def done(self) -> bool:
        return self._state == self.DONE

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos, n = 0, len(data)
        while pos < n and self._state != self.DONE:
            if self._state == self.DATA:
                take = min(self._remaining, n - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                self.decoded += take
                if self._remaining == 0:
                    self._state = self.DATA_END
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self._line += data[pos:]
                if len(self._line) > self.MAX_LINE:
                    raise IncompleteBody("Malformed aws-chunked body: line too long.")
                break
            self._line += data[pos : end + 1]
            pos = end + 1
            line = bytes(self._line[:-2] if self._line.endswith(b"\r\n") else self._line[:-1])
            self._line.clear()
            self._line_done(line)
        return out

    def _line_done(self, line: bytes) -> None:
        if self._state == self.SIZE:
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise IncompleteBody("Malformed aws-chunked body: bad chunk size line.") from None
            if size < 0:
                raise IncompleteBody("Malformed aws-chunked body: bad chunk size line.")
            if size == 0:
                self._state = self.TRAILER
            else:
                self._remaining, self._state = size, self.DATA
        elif self._state == self.DATA_END:
            if line:
                raise IncompleteBody("Malformed aws-chunked body: chunk longer than its size.")
            self._state = self.SIZE
        elif self._state == self.TRAILER:
            if not line:
                self._state = self.DONE
                return
            name, sep, value = line.partition(b":")
            if not sep:
                raise IncompleteBody("Malformed aws-chunked body: bad trailer line.")
            self.trailers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")

    def finish(self) -> None:
        if self._state == self.TRAILER and not self._line:
            self._state = self.DONE  # tolerate a missing final empty line
        if self._state != self.DONE:
            raise IncompleteBody("The request body terminated unexpectedly (incomplete aws-chunked body).")
