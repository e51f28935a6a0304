"""An S3 request as the operations see it: method, bucket, key, query, headers, and the body as a
stream of decoded chunks; and the operations' shared stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from modelhost.security import ChunkSigner
from modelhost.server.asgi import Receive, new_request_id
from modelhost.server.s3.chunked import AwsChunkedDecoder
from modelhost.server.s3.xml import MaxMessageLengthExceeded
from modelhost.store.buckets import BucketStore
from modelhost.store.multipart import MultipartUploads

MAX_XML_BODY = 4 * 1024 * 1024


@dataclass
class Stores:
    """What the operations work on."""

    store: BucketStore
    uploads: MultipartUploads
    region: str


class ClientDisconnected(Exception):
    pass


class Body:
    """The request body as a stream of decoded chunks."""

    def __init__(self, receive: Receive, chunked: bool, signer: ChunkSigner | None = None) -> None:
        self._receive = receive
        self.finished = False
        self.started = False
        self.decoder = AwsChunkedDecoder(signer) if chunked or signer is not None else None

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        while not self.finished:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            data = message.get("body", b"")
            self.finished = not message.get("more_body", False)
            if self.decoder is not None:
                for piece in self.decoder.feed(data):
                    yield piece
            elif data:
                yield data
        if self.decoder is not None:
            self.decoder.finish()

    async def read(self, limit: int = MAX_XML_BODY) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise MaxMessageLengthExceeded("Your request was too big.")
            parts.append(chunk)
        return b"".join(parts)


@dataclass
class S3Request:
    method: str
    bucket: str | None
    key: str | None
    query: dict[str, str]
    headers: dict[str, str]
    body: Body
    request_id: str = field(default_factory=new_request_id)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def names(self) -> tuple[str, str]:
        """(bucket, key) of an object request."""
        assert self.bucket is not None and self.key is not None
        return self.bucket, self.key
