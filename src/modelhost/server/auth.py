"""Request authentication.

Today any well-formed SigV4 ``Authorization`` header (or none, for curl and health checks) is
accepted: credentials are not checked yet. Signature verification slots in here (see
reference section 1.2) without touching the routes.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from modelhost.errors import ApiError


class IncompleteSignature(ApiError):
    code = "IncompleteSignatureException"
    status = 403


@dataclass(frozen=True)
class Caller:
    access_key: str | None
    region: str | None


def authenticate(request: Request) -> Caller:
    header = request.headers.get("authorization")
    if header is None:
        return Caller(None, None)
    if not header.startswith("AWS4-HMAC-SHA256 "):
        raise IncompleteSignature("Authorization header requires the AWS4-HMAC-SHA256 scheme.")
    parts = dict(p.strip().split("=", 1) for p in header.removeprefix("AWS4-HMAC-SHA256 ").split(",") if "=" in p)
    credential = parts.get("Credential", "").split("/")
    if len(credential) != 5 or not all(k in parts for k in ("SignedHeaders", "Signature")):
        raise IncompleteSignature(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters."
        )
    return Caller(credential[0], credential[2])
