"""SigV4 verification with botocore's own signing code.

The request is rebuilt as a botocore ``AWSRequest`` (method, the raw still-encoded path, the query,
only the headers named in SignedHeaders, ``context["timestamp"]`` from X-Amz-Date) and botocore's
``SigV4Auth`` (``S3SigV4Auth`` rules for S3: the path is not normalised) computes the canonical
request, the string to sign and the signature, exactly as a client signing it did; the result is
compared with ``hmac.compare_digest``. The derived signing key (``AWS4<secret>`` → date → region →
service → ``aws4_request``, through botocore's ``_sign``) is cached per key, day, region and
service, so a request costs one HMAC for the signature.

Checked here: the key exists, the credential scope is well formed, the time is within 15 minutes
(``X-Amz-Expires`` for presigned URLs, at most a week), the security token when the key has one
(and its absence when it has none), the signature. The body is the caller's business: the payload
hash handed to ``verify`` is what the request claims (S3: its ``x-amz-content-sha256``) or what
the server computed while reading it (the other services); ``ChunkSigner`` checks aws-chunked
chunk and trailer signatures as the chunks are decoded (the chained string-to-sign of the streaming
SigV4 specification, signed with the same cached key).

Failures are ``AuthFailure(kind, detail)``; server/middleware/auth.py words each kind the way the
route's service does.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from botocore.auth import EMPTY_SHA256_HASH, S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest

from modelhost.security.credentials import Key, Keyring

ALGORITHM = "AWS4-HMAC-SHA256"
SCHEME = ALGORITHM + " "
MAX_SKEW = 15 * 60  # seconds
MAX_PRESIGNED_EXPIRES = 7 * 24 * 3600
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
MAX_CACHED_KEYS = 1024

# Failure kinds.
MISSING = "missing"  # no signature at all
INCOMPLETE = "incomplete"  # a malformed Authorization header / presigned query
UNKNOWN_KEY = "unknown-key"
BAD_SIGNATURE = "bad-signature"
BAD_TOKEN = "bad-token"  # X-Amz-Security-Token missing, unexpected or wrong
EXPIRED = "expired"  # X-Amz-Date more than 15 minutes in the past
NOT_YET = "not-yet"  # ... or in the future
PRESIGNED_EXPIRED = "presigned-expired"
PRESIGNED_BAD_EXPIRES = "presigned-bad-expires"
SIGV2 = "sigv2"


class AuthFailure(Exception):
    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


@dataclass(slots=True)
class Signed:
    """What a request claims: its credential scope, signed header names, signature, time."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: str | None = None  # X-Amz-Date (header auth: filled from the headers)
    presigned: bool = False
    expires: int = 0
    token: str | None = None
    query: list[tuple[str, str]] | None = None  # presigned: the decoded query without X-Amz-Signature

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(slots=True)
class Verified:
    key: Key
    signed: Signed
    signing_key: bytes

    def chunk_signer(self) -> ChunkSigner:
        assert self.signed.timestamp is not None
        return ChunkSigner(self.signing_key, self.signed.timestamp, self.signed.scope, self.signed.signature)


def parse_authorization(header: str) -> Signed:
    """``AWS4-HMAC-SHA256 Credential=AK/date/region/service/aws4_request, SignedHeaders=a;b, Signature=hex``."""
    if not header.startswith(SCHEME):
        raise AuthFailure(INCOMPLETE, "Authorization header requires the AWS4-HMAC-SHA256 scheme.")
    credential: list[str] = []
    signed_headers = signature = None
    for part in header[len(SCHEME) :].split(","):  # (on the hot path: no regex)
        part = part.strip()
        if part.startswith("Credential="):
            credential = part[11:].split("/")
        elif part.startswith("SignedHeaders="):
            signed_headers = part[14:]
        elif part.startswith("Signature="):
            signature = part[10:]
    if len(credential) != 5 or not signed_headers or not signature:
        missing = [
            n
            for n, v in (
                ("Credential", len(credential) == 5),
                ("SignedHeaders", signed_headers),
                ("Signature", signature),
            )
            if not v
        ]
        raise AuthFailure(
            INCOMPLETE,
            f"Authorization header requires {' and '.join(repr(m) for m in missing)} parameter"
            f"{'s' if len(missing) > 1 else ''}. Authorization={header[:256]}",
        )
    return _signed(credential, signed_headers, signature)


def _signed(credential: list[str], signed_headers: str, signature: str) -> Signed:
    if credential[4] != "aws4_request" or len(credential[1]) != 8 or not credential[1].isdigit():
        raise AuthFailure(
            INCOMPLETE, f"Credential should be scoped to a valid date and end in aws4_request: {'/'.join(credential)}"
        )
    names = tuple(signed_headers.split(";"))
    if "host" not in names:
        raise AuthFailure(INCOMPLETE, "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    return Signed(credential[0], credential[1], credential[2], credential[3], names, signature)


def parse_presigned(query: Iterable[tuple[str, str]]) -> Signed:
    """The ``X-Amz-*`` parameters of a presigned URL's (decoded) query."""
    params: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in query:
        if name == "X-Amz-Signature":
            params[name] = value
        else:
            if name.startswith("X-Amz-"):
                params[name] = value
            rest.append((name, value))
    needed = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date", "X-Amz-SignedHeaders")
    missing = [n for n in needed if not params.get(n)]
    if missing:
        raise AuthFailure(INCOMPLETE, f"Query-string authentication requires the {', '.join(missing)} parameter(s).")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise AuthFailure(INCOMPLETE, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    credential = params["X-Amz-Credential"].split("/")
    if len(credential) != 5:
        raise AuthFailure(INCOMPLETE, f"Error parsing the X-Amz-Credential parameter: {params['X-Amz-Credential']}")
    signed = _signed(credential, params["X-Amz-SignedHeaders"], params["X-Amz-Signature"])
    signed.presigned = True
    signed.timestamp = params["X-Amz-Date"]
    signed.token = params.get("X-Amz-Security-Token")
    expires = params.get("X-Amz-Expires", "")
    if not expires.isdigit():
        raise AuthFailure(PRESIGNED_BAD_EXPIRES, "X-Amz-Expires should be a number")
    signed.expires = int(expires)
    if signed.expires > MAX_PRESIGNED_EXPIRES:
        raise AuthFailure(PRESIGNED_BAD_EXPIRES, "X-Amz-Expires must be less than a week (in seconds) that is 604800")
    signed.query = rest
    return signed


def split_query(raw: bytes) -> list[tuple[str, str]]:
    """A raw query string as decoded (name, value) pairs, in order (``+`` is a literal plus, as in SigV4)."""
    if not raw:
        return []
    out = []
    for pair in raw.decode("latin-1").split("&"):
        if pair:
            name, _, value = pair.partition("=")
            out.append((unquote(name), unquote(value)))
    return out


_TIMESTAMPS: dict[str, int] = {}


def parse_timestamp(ts: str) -> int:
    """``YYYYMMDD'T'HHMMSS'Z'`` as seconds since the epoch (ValueError when it is not one); the last
    few are remembered (a client sends the same second many times)."""
    when = _TIMESTAMPS.get(ts)
    if when is None:
        when = _parse_timestamp(ts)
        if len(_TIMESTAMPS) > 64:
            _TIMESTAMPS.clear()
        _TIMESTAMPS[ts] = when
    return when


def _parse_timestamp(ts: str) -> int:
    if len(ts) != 16 or ts[8] != "T" or ts[15] != "Z" or not (ts[:8] + ts[9:15]).isdigit():
        raise ValueError(ts)
    parts = (int(ts[0:4]), int(ts[4:6]), int(ts[6:8]), int(ts[9:11]), int(ts[11:13]), int(ts[13:15]))
    if not (1 <= parts[1] <= 12 and 1 <= parts[2] <= 31 and parts[3] < 24 and parts[4] < 60 and parts[5] < 61):
        raise ValueError(ts)
    return calendar.timegm((*parts, 0, 0, 0))


def format_timestamp(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


_WANTED: dict[tuple[str, ...], frozenset[bytes]] = {}


def _wanted(names: tuple[str, ...]) -> frozenset[bytes]:
    """The SignedHeaders names as bytes (clients send the same list each time: remembered)."""
    wanted = _WANTED.get(names)
    if wanted is None:
        wanted = frozenset(n.encode("latin-1") for n in names)
        if len(_WANTED) > 256:
            _WANTED.clear()
        _WANTED[names] = wanted
    return wanted


class SignedHeaders:
    """The signed headers by lower-case name (repeats kept in order): the part of botocore's
    ``HTTPHeaders`` its signer reads (iteration, ``get_all``, ``in``, ``[]``), without the cost of
    an ``email.message`` per request."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[str, list[str]] = {}

    def add(self, name: str, value: str) -> None:
        values = self._values.get(name)
        if values is None:
            self._values[name] = [value]
        else:
            values.append(value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()][0]

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._values.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str, default: list[str] | None = None) -> list[str] | None:
        return self._values.get(name.lower(), default)

    def items(self) -> list[tuple[str, str]]:
        return [(k, v) for k, vs in self._values.items() for v in vs]


class _Check(SigV4Auth):
    """botocore's SigV4 signer over a request rebuilt from the wire: the headers to sign are the
    request's SignedHeaders (no deny list, no added host), the payload hash is given, and the
    signing key is the cached one."""

    def __init__(self, key: Key, signed: Signed, headers: SignedHeaders, payload: str, signing_key: bytes) -> None:
        super().__init__(key.credentials, signed.service, signed.region)
        self._headers = headers
        self._payload = payload
        self._signing_key = signing_key

    def headers_to_sign(self, request: AWSRequest) -> SignedHeaders:
        return self._headers

    def payload(self, request: AWSRequest) -> str:
        return self._payload

    def signature(self, string_to_sign: str, request: AWSRequest) -> str:
        return str(self._sign(self._signing_key, string_to_sign, hex=True))


class _S3Check(_Check, S3SigV4Auth):
    """S3's rules (S3SigV4Auth): the path is used as sent, not normalised."""


class Verifier:
    """Verifies SigV4 requests against a keyring; ``clock`` is injectable for tests."""

    def __init__(self, keyring: Keyring, clock: Any = time.time, max_skew: int = MAX_SKEW) -> None:
        self.keyring = keyring
        self.clock = clock
        self.max_skew = max_skew
        self._keys: dict[tuple[str, str, str, str, str], bytes] = {}

    def signing_key(self, key: Key, date: str, region: str, service: str) -> bytes:
        """botocore's key derivation (``SigV4Auth.signature``'s steps, with its ``_sign``), cached."""
        cache_key = (key.access_key, key.secret_key, date, region, service)
        derived = self._keys.get(cache_key)
        if derived is None:
            sign = SigV4Auth._sign
            k_date = sign(None, f"AWS4{key.secret_key}".encode(), date)
            k_region = sign(None, k_date, region)
            k_service = sign(None, k_region, service)
            derived = sign(None, k_service, "aws4_request")
            if len(self._keys) >= MAX_CACHED_KEYS:
                self._keys.clear()
            self._keys[cache_key] = derived
        return derived

    def verify(
        self,
        signed: Signed,
        method: str,
        raw_path: bytes,
        query: list[tuple[str, str]],
        headers: Iterable[tuple[bytes, bytes]],
        payload_hash: str,
    ) -> Verified:
        """Check ``signed`` against the request; ``query`` is decoded pairs (without X-Amz-Signature)."""
        key = self.keyring.get(signed.access_key)
        if key is None:
            raise AuthFailure(UNKNOWN_KEY, signed.access_key)
        wanted = _wanted(signed.signed_headers)
        signed_headers = SignedHeaders()
        timestamp = signed.timestamp
        date_header = None
        header_auth = not signed.presigned
        for raw_name, raw_value in headers:  # ASGI header names are lower-case
            if raw_name in wanted:
                signed_headers.add(raw_name.decode("latin-1"), raw_value.decode("latin-1"))
            if header_auth and raw_name[:2] in (b"x-", b"da"):
                if raw_name == b"x-amz-date":
                    timestamp = raw_value.decode("latin-1")
                elif raw_name == b"date":
                    date_header = raw_value.decode("latin-1")
                elif raw_name == b"x-amz-security-token":
                    signed.token = raw_value.decode("latin-1")
        if timestamp is None and date_header is not None:
            timestamp = _from_http_date(date_header)
        if timestamp is None:
            raise AuthFailure(
                INCOMPLETE, "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
            )
        signed.timestamp = timestamp
        self._check_time(signed)
        if key.token is not None or signed.token is not None:
            if key.token is None or signed.token is None or not hmac.compare_digest(key.token, signed.token):
                raise AuthFailure(BAD_TOKEN)
        signing_key = self.signing_key(key, signed.date, signed.region, signed.service)
        check_class = _S3Check if signed.service == "s3" else _Check
        check = check_class(key, signed, signed_headers, payload_hash, signing_key)
        request = AWSRequest(method=method, url="http://host" + raw_path.decode("latin-1"), params=query or None)
        request.headers = signed_headers
        request.context["timestamp"] = timestamp
        canonical = check.canonical_request(request)
        expected = check.signature(check.string_to_sign(request, canonical), request)
        if not hmac.compare_digest(expected, signed.signature):
            raise AuthFailure(BAD_SIGNATURE, canonical)
        return Verified(key, signed, signing_key)

    def _check_time(self, signed: Signed) -> None:
        assert signed.timestamp is not None
        try:
            when = parse_timestamp(signed.timestamp)
        except ValueError:
            raise AuthFailure(INCOMPLETE, f"Invalid date: X-Amz-Date {signed.timestamp!r}") from None
        now = self.clock()
        if signed.presigned:
            if now < when - self.max_skew:
                raise AuthFailure(PRESIGNED_EXPIRED, "Request is not valid yet")
            if now > when + signed.expires:
                raise AuthFailure(PRESIGNED_EXPIRED, "Request has expired")
            return
        if when < now - self.max_skew:
            raise AuthFailure(
                EXPIRED,
                f"Signature expired: {signed.timestamp} is now earlier than {format_timestamp(now - self.max_skew)} "
                f"({format_timestamp(now)} - {self.max_skew // 60} min.)",
            )
        if when > now + self.max_skew:
            raise AuthFailure(
                NOT_YET,
                f"Signature not yet current: {signed.timestamp} is still later than "
                f"{format_timestamp(now + self.max_skew)} ({format_timestamp(now)} + {self.max_skew // 60} min.)",
            )


def _from_http_date(value: str) -> str | None:
    from email.utils import parsedate_to_datetime

    try:
        return format_timestamp(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError):
        return None


class ChunkSigner:
    """The chained signatures of an aws-chunked body (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``): each
    chunk's string to sign is ``AWS4-HMAC-SHA256-PAYLOAD``, the time, the scope, the previous
    signature (the request's, for the first chunk), the empty hash and the chunk's hash; the trailer's
    is ``AWS4-HMAC-SHA256-TRAILER``, ..., the hash of the trailer lines. botocore has no code for
    these (it never sends signed chunks), so they are built here and signed with botocore's ``_sign``."""

    def __init__(self, signing_key: bytes, timestamp: str, scope: str, seed: str) -> None:
        self._key = signing_key
        self._prefix = f"\n{timestamp}\n{scope}\n"
        self.previous = seed

    def _expect(self, kind: str, last: str) -> str:
        string_to_sign = f"{kind}{self._prefix}{self.previous}\n{last}"
        return str(SigV4Auth._sign(None, self._key, string_to_sign, hex=True))

    def chunk(self, signature: str, data_sha256: str) -> bool:
        """Whether ``signature`` is the next chunk's (its data hashing to ``data_sha256``)."""
        expected = self._expect("AWS4-HMAC-SHA256-PAYLOAD", f"{EMPTY_SHA256_HASH}\n{data_sha256}")
        self.previous = expected
        return hmac.compare_digest(expected, signature)

    def trailer(self, signature: str, trailer_lines: bytes) -> bool:
        """Whether ``signature`` signs the trailer (``name:value\\n`` lines, the signature's own excluded)."""
        expected = self._expect("AWS4-HMAC-SHA256-TRAILER", hashlib.sha256(trailer_lines).hexdigest())
        return hmac.compare_digest(expected, signature)
