"""Console sessions: an access key and its secret checked once at login, then a signed cookie.

The cookie is ``<access key>.<expiry>.<HMAC-SHA256>`` over the key, the expiry and a digest of the
key's secret, under a server secret kept in ``<data-dir>/console-session.key`` (0600): it is
checked on every request like a signature (``hmac.compare_digest``), expires, and stops working
when the key leaves the credentials file or its secret changes. The server sets it HTTP-only,
SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from modelhost.security.credentials import Key, Keyring

COOKIE = "modelhost_console"
LIFETIME = 12 * 3600


def server_secret(path: Path) -> bytes:
    """The signing secret, made once (32 random bytes, mode 0600) and reused across restarts."""
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data


class Sessions:
    def __init__(
        self, keyring: Keyring, secret: bytes, lifetime: int = LIFETIME, clock: Callable[[], float] = time.time
    ) -> None:
        self.keyring = keyring
        self.secret = secret
        self.lifetime = lifetime
        self.clock = clock

    def _mac(self, key: Key, expiry: int) -> str:
        bound = hashlib.sha256(key.secret_key.encode()).hexdigest()
        return hmac.new(self.secret, f"{key.access_key}.{expiry}.{bound}".encode(), hashlib.sha256).hexdigest()

    def login(self, access_key: str, secret_key: str) -> str | None:
        """The cookie value for a key whose secret matches, else None."""
        key = self.keyring.get(access_key.strip())
        if key is None or not hmac.compare_digest(key.secret_key.encode(), secret_key.encode()):
            return None
        expiry = int(self.clock()) + self.lifetime
        return f"{key.access_key}.{expiry}.{self._mac(key, expiry)}"

    def verify(self, cookie: str | None) -> Key | None:
        """The key a cookie stands for, or None (malformed, forged, expired, key gone or changed)."""
        if not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        access_key, expiry_text, mac = parts
        key = self.keyring.get(access_key)
        if key is None:
            return None
        expiry = int(expiry_text)
        if not hmac.compare_digest(self._mac(key, expiry), mac) or expiry < self.clock():
            return None
        return key
