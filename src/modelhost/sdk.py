"""A real ``sagemaker.Session`` (SDK v2) wired to a modelhost server.

Every AWS client the SDK makes from this session (SageMaker, SageMaker Runtime, S3, STS, ...)
goes to the server's URL; the default bucket lives in the server's bucket store.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config

DEFAULT_ROLE = "arn:aws:iam::123456789012:role/modelhost"


class ModelhostBotoSession(boto3.Session):
    """A boto3 session whose clients and resources all use the modelhost URL."""

    def __init__(self, endpoint_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.modelhost_url = endpoint_url

    def _redirect(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # The SDK sometimes names an AWS endpoint itself (e.g. the regional STS URL): send it here too.
        url = kwargs.get("endpoint_url")
        if not url or "amazonaws.com" in url:
            kwargs["endpoint_url"] = self.modelhost_url
        return kwargs

    def client(self, *args: Any, **kwargs: Any) -> Any:
        return super().client(*args, **self._redirect(kwargs))

    def resource(self, *args: Any, **kwargs: Any) -> Any:
        return super().resource(*args, **self._redirect(kwargs))


def boto_session(url: str, region: str | None = None) -> ModelhostBotoSession:
    region = region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    probe = boto3.Session(region_name=region)
    if probe.get_credentials() is None:  # any well-formed pair works against modelhost
        return ModelhostBotoSession(
            url, aws_access_key_id="modelhost", aws_secret_access_key="modelhost", region_name=region
        )
    return ModelhostBotoSession(url, region_name=region)


FAST_POLL = 0.5  # seconds; modelhost endpoints are InService in seconds, not minutes


def _session_class() -> Any:
    import sagemaker

    class ModelhostSession(sagemaker.Session):
        """A ``sagemaker.Session`` that polls modelhost quickly instead of every 30 s."""

        def wait_for_endpoint(self, endpoint: str, poll: float = 30, live_logging: bool = False) -> Any:
            return super().wait_for_endpoint(endpoint, poll=min(poll, FAST_POLL), live_logging=live_logging)

        def wait_for_transform_job(self, job: str, poll: float = 5) -> Any:
            return super().wait_for_transform_job(job, poll=min(poll, FAST_POLL))

        def wait_for_processing_job(self, job: str, poll: float = 5) -> Any:
            return super().wait_for_processing_job(job, poll=min(poll, FAST_POLL))

        def logs_for_processing_job(self, job_name: str, wait: bool = False, poll: float = 10) -> Any:
            # The SDK re-describes a running job only every 30 s while tailing; modelhost's jobs take
            # seconds, so wait for the end first, then print the whole log once.
            if wait:
                self.wait_for_processing_job(job_name)
            return super().logs_for_processing_job(job_name, wait=wait, poll=min(poll, FAST_POLL))

    return ModelhostSession


def sagemaker_session(url: str = "http://127.0.0.1:8080", region: str | None = None, **kwargs: Any) -> Any:
    """``sagemaker.Session`` whose every call goes to the modelhost server at ``url``."""
    session = boto_session(url, region)
    config = Config(read_timeout=70, retries={"mode": "standard", "max_attempts": 2})
    return _session_class()(
        boto_session=session,
        sagemaker_client=session.client("sagemaker", config=config),
        sagemaker_runtime_client=session.client("sagemaker-runtime", config=config),
        **kwargs,
    )
