"""The caller of a request and the permission check the handlers make once they know the action.

``scope[CALLER]`` is set by the auth middleware for every request: a ``Caller`` with the verified
key when a credentials file is configured (``key`` is then set), or just what the Authorization
header names when it is not (nothing is checked then). ``authorize(scope, action, resource)`` raises
``security.AccessDenied`` when the key's permissions do not allow it, and otherwise notes the
decision in ``scope[AUTHORIZED]`` for the audit log (the middleware writes it once the answer's
status is known).
"""

from __future__ import annotations

from typing import NamedTuple

from modelhost.security import Key
from modelhost.security import authorize as check_permission
from modelhost.server.asgi import CALLER, Scope

AUTHORIZED = "modelhost.authorized"  # list[tuple[str, str]]: (action, resource) the caller was allowed
CHUNK_SIGNER = "modelhost.chunk_signer"  # security.ChunkSigner of a signed aws-chunked S3 body


class Caller(NamedTuple):
    access_key: str | None  # None: an unsigned request
    region: str | None
    name: str | None = None  # the credentials section (IAM user name); verified callers only
    account: str | None = None
    key: Key | None = None  # the verified key; None when requests are not authenticated

    @property
    def arn(self) -> str | None:
        return self.key.arn if self.key is not None else None


def authorize(scope: Scope, action: str, resource: str = "*") -> None:
    """Raise AccessDenied unless the verified caller may do ``action`` on ``resource`` (no-op when
    requests are not authenticated)."""
    caller: Caller | None = scope.get(CALLER)
    if caller is None or caller.key is None:
        return
    check_permission(caller.key, action, resource)
    decided = scope.get(AUTHORIZED)
    if decided is None:
        scope[AUTHORIZED] = [(action, resource)]
    else:
        decided.append((action, resource))
