"""Which webhook targets (async SuccessTopic / ErrorTopic URLs) may be called: not loopback,
link-local, private (RFC 1918, fc00::/7, ...) or unspecified addresses, unless the host or a URL
prefix is listed in ``MODELHOST_WEBHOOK_ALLOW``. Pure policy: name resolution is the caller's."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import urlsplit

ALLOW_ENV = "MODELHOST_WEBHOOK_ALLOW"
BLOCKED_KINDS = "a loopback, link-local, private or unspecified address"

Resolver = Callable[[str], list[str]]  # host -> its addresses (OSError when it does not resolve)


def blocked_address(address: str) -> bool:
    """Loopback, link-local, private (RFC 1918, fc00::/7, ...) or unspecified (IPv4-mapped IPv6 included)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True  # not an IP address at all: nothing we would connect to
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_unspecified


def webhook_allowed(url: str, allow: str) -> bool:
    """Listed in MODELHOST_WEBHOOK_ALLOW (comma list): the host, ``host:port``, or a prefix of the URL
    (an entry with ``://``)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    for entry in (e.strip() for e in allow.split(",")):
        if not entry:
            continue
        if "://" in entry:
            if url.startswith(entry):
                return True
        elif entry.lower().strip("[]") == host or entry.lower() in (f"{host}:{port}", f"[{host}]:{port}"):
            return True
    return False


def webhook_refusal(url: str, allow: str, resolver: Resolver) -> str | None:
    """Why a webhook may not be called (its host is or resolves to an internal address), else None.
    A host that does not resolve now is not refused here (every delivery checks again)."""
    if webhook_allowed(url, allow):
        return None
    host = urlsplit(url).hostname or ""
    try:
        addresses = resolver(host)
    except (OSError, UnicodeError):
        return None
    bad = next((a for a in addresses if blocked_address(a)), None)
    if bad is None:
        return None
    shown = host if bad == host else f"{host} ({bad})"
    return f"its host {shown} is {BLOCKED_KINDS}; list it in {ALLOW_ENV} to allow it"
