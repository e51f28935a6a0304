"""modelhost: SageMaker-compatible model hosting on one machine."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["sagemaker_session"]


def sagemaker_session(url: str = "http://127.0.0.1:8080", region: str | None = None, **kwargs: Any) -> Any:
    """A real ``sagemaker.Session`` (SDK v2) wired to the modelhost server at ``url``."""
    from modelhost.sdk import sagemaker_session as make

    return make(url, region, **kwargs)
