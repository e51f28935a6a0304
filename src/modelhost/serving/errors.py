"""Errors that carry an HTTP status back to the caller of /invocations."""

from __future__ import annotations

from collections.abc import Iterable


class ModelServerError(Exception):
    """An error the worker answers with ``status`` and ``message`` (text/plain) instead of a 500."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class UnsupportedContentType(ModelServerError):
    def __init__(self, content_type: str, supported: Iterable[str] | None = None) -> None:
        msg = f"Content type {content_type!r} is not supported"
        if supported:
            msg += f"; supported: {', '.join(sorted(supported))}"
        super().__init__(415, msg)


class UnsupportedAccept(ModelServerError):
    def __init__(self, accept: str, supported: Iterable[str] | None = None) -> None:
        msg = f"Accept type {accept!r} is not supported"
        if supported:
            msg += f"; supported: {', '.join(sorted(supported))}"
        super().__init__(406, msg)


class BadRequest(ModelServerError):
    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class ModelLoadError(Exception):
    """Loading failed; ``reason`` is the one-line explanation written to MODELHOST_ERROR_FILE."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
