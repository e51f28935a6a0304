"""Who may call the server, and what they may do: the keys (``credentials``), SigV4 verification
with botocore's signing code (``sigv4``), IAM-style permissions (``permissions``) and the audit
log of accepted mutating calls (``audit``).

    credentials.py  the AWS shared-credentials INI file: [name] sections, keys, permissions
    sigv4.py        Authorization-header and presigned-query SigV4 verification, aws-chunked signatures
    permissions.py  actions with wildcards, optionally restricted to resource ARNs; AccessDenied
    audit.py        <data-dir>/logs/audit.jsonl, rotated by size, mode 0600

Protocol-neutral: failures are raised as ``sigv4.AuthFailure`` kinds or ``permissions.AccessDenied``;
server/middleware/auth.py words them in each route's protocol.
"""

from __future__ import annotations

from modelhost.security.audit import AuditLog
from modelhost.security.credentials import CredentialsError, Key, Keyring, load_credentials
from modelhost.security.permissions import AccessDenied, Policy, authorize, is_mutating
from modelhost.security.sigv4 import AuthFailure, ChunkSigner, Verified, Verifier

__all__ = [
    "AccessDenied",
    "AuditLog",
    "AuthFailure",
    "ChunkSigner",
    "CredentialsError",
    "Key",
    "Keyring",
    "Policy",
    "Verified",
    "Verifier",
    "authorize",
    "is_mutating",
    "load_credentials",
]
