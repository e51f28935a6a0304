"""Whether the server may start as configured, and the one line it says about authentication.

With a credentials file, requests must be signed by one of its keys. Without one nothing is
checked, so the server only binds to loopback unless told ``--insecure``: on any other address,
anyone who can reach the port could run code (a model's ``inference.py``) as the server's user.
"""

from __future__ import annotations

import ipaddress

from modelhost.config import Settings
from modelhost.security import CredentialsError, load_credentials


class RefusedToStart(Exception):
    """The configuration is unsafe or unusable; the message says why and what to do."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def authentication_notice(settings: Settings, insecure: bool) -> str:
    """The start-up line about authentication; RefusedToStart for an unusable credentials file or a
    non-loopback bind without one (unless ``insecure``)."""
    if settings.credentials_file:
        try:
            keys = load_credentials(settings.credentials_file, settings.account_id)
        except CredentialsError as exc:
            raise RefusedToStart(str(exc)) from None
        return (
            f"modelhost: requests must be signed by one of {len(keys)} key(s) in {settings.credentials_file} "
            f"({', '.join(keys.names())})"
        )
    if not is_loopback(settings.host) and not insecure:
        raise RefusedToStart(
            f"--host {settings.host} is not a loopback address and no --credentials-file is given: anyone who "
            "can reach the port could run code as this user. Pass --credentials-file (or "
            "MODELHOST_CREDENTIALS_FILE), or --insecure to serve unauthenticated anyway."
        )
    where = "on loopback only" if is_loopback(settings.host) else f"on {settings.host} (--insecure)"
    return f"modelhost: requests are not authenticated (no --credentials-file); serving {where}"
