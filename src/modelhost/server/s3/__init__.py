"""The S3 API (REST-XML): the embedded bucket store (``S3App``), or a configured real S3 service
(``S3Proxy``); ``is_s3_request`` tells the front door which requests are S3's.

    routing.py    which requests are S3, path/virtual-host addressing, operation dispatch
    app.py        the ASGI app over the embedded store: request decoding, streamed replies, errors
    request.py    the request record and its (decoded) body stream
    chunked.py    aws-chunked decoding
    xml.py        XML replies and S3's error document
    checksums.py  Content-MD5 / sha256 / x-amz-checksum-* expectations
    objects.py  buckets.py  multipart.py   the operations
    proxy.py      forwarding to a real S3 service, re-signed
"""

from __future__ import annotations

from modelhost.server.s3.app import S3App, send_error
from modelhost.server.s3.buckets import decode_token, encode_token
from modelhost.server.s3.chunked import AwsChunkedDecoder
from modelhost.server.s3.objects import copy_source, parse_range
from modelhost.server.s3.routing import is_s3_request, locate
from modelhost.server.s3.xml import STATUS, Reply, error_reply

__all__ = [
    "STATUS",
    "AwsChunkedDecoder",
    "Reply",
    "S3App",
    "copy_source",
    "decode_token",
    "encode_token",
    "error_reply",
    "is_s3_request",
    "locate",
    "parse_range",
    "send_error",
]
