"""Which ``Host`` (and ``Origin``) names the server answers to: the defence against DNS rebinding.

A web page on ``attacker.example`` whose DNS name is re-pointed at 127.0.0.1 makes the browser
send ``Host: attacker.example`` to this server; refusing every name not configured here stops it.
Accepted by default: the loopback names (``localhost``, ``127.0.0.1``, ``::1``, any 127.x address),
``*.localhost`` (S3 virtual-host style, ``<bucket>.localhost``) and the bind address. Bound to a
wildcard address (``0.0.0.0`` / ``::``), any IP literal is accepted too: a browser only sends an
IP literal as ``Host`` for a page served from that IP itself, so IP literals cannot be rebound.
More names: ``--allowed-hosts a,b`` / ``MODELHOST_ALLOWED_HOSTS`` (``*.example.com`` for
subdomains, ``*`` for any host).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
CACHE_LIMIT = 1024  # distinct Host values remembered (a hostile client cannot grow it further)


def hostname(value: str) -> str:
    """The host name of a ``Host`` header value (or an Origin's authority): lower-case, without
    the port, the IPv6 brackets or a trailing dot; "" when it is not one."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not (value[end + 1] == ":" and value[end + 2 :].isdigit())):
            return ""
        return value[1:end]
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        value = name
    elif colon and ":" not in name:
        return ""  # "host:" or "host:abc"
    return value.removesuffix(".")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class HostPolicy:
    """``allows(host_header_value)``: one dict lookup per request once a value has been seen."""

    def __init__(self, bind_host: str = "127.0.0.1", extra: Iterable[str] = ()) -> None:
        self.allow_all = False
        self.any_ip = bind_host.strip() in WILDCARD_BINDS or bind_host.strip() == "[::]"
        self.names = set(LOOPBACK_NAMES)
        self.suffixes = [".localhost"]
        if not self.any_ip:
            self.names.add(hostname(bind_host) or bind_host.strip().lower())
        for entry in extra:
            entry = entry.strip().lower()
            if not entry:
                continue
            if entry == "*":
                self.allow_all = True
            elif entry.startswith("*."):
                self.suffixes.append(entry[1:])
            elif entry.startswith("."):
                self.suffixes.append(entry)
            else:
                self.names.add(hostname(entry) or entry)
        self._cache: dict[bytes, bool] = {}

    @classmethod
    def parse(cls, bind_host: str, allowed: str) -> HostPolicy:
        """From the bind address and a comma list (``--allowed-hosts``)."""
        return cls(bind_host, allowed.split(","))

    def allows(self, host: bytes) -> bool:
        """Whether a ``Host`` header value names this server."""
        ok = self._cache.get(host)
        if ok is None:
            ok = self.allow_all or self.allows_name(hostname(host.decode("latin-1")))
            if len(self._cache) < CACHE_LIMIT:
                self._cache[host] = ok
        return ok

    def allows_name(self, name: str) -> bool:
        if self.allow_all:
            return True
        if not name:
            return False
        if name in self.names or any(name.endswith(s) for s in self.suffixes):
            return True
        ip = _ip(name)
        return ip is not None and (self.any_ip or ip.is_loopback)

    def allows_origin(self, origin: bytes) -> bool:
        """Whether an ``Origin`` header value (``scheme://host[:port]``; "null" never) is one of ours."""
        text = origin.decode("latin-1").strip()
        scheme, sep, authority = text.partition("://")
        if not sep or scheme.lower() not in ("http", "https") or "/" in authority or "@" in authority:
            return False
        return self.allows(authority.encode("latin-1"))


def presigned(query: bytes) -> bool:
    """A presigned (query-signed) request: SigV4 ``X-Amz-Signature=`` or SigV2 ``Signature=``."""
    return b"Signature=" in query
