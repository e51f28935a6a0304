"""boto3 clients pointed at a modelhost server (what the CLI and the examples use)."""

from __future__ import annotations

import os
import urllib.request
from typing import Any

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config

DEFAULT_URL = os.environ.get("MODELHOST_URL", "http://127.0.0.1:8080")


def boto_session() -> boto3.Session:
    # Any well-formed credentials work against modelhost; supply dummies when none are configured.
    session = boto3.Session(region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    if session.get_credentials() is None:
        session = boto3.Session(
            aws_access_key_id="modelhost", aws_secret_access_key="modelhost", region_name=session.region_name
        )
    return session


def clients(url: str = DEFAULT_URL, read_timeout: float = 70) -> tuple[Any, Any]:
    """(sagemaker, sagemaker-runtime) clients for the server at ``url``."""
    session = boto_session()
    config = Config(read_timeout=read_timeout, retries={"mode": "standard", "max_attempts": 1})
    return (
        session.client("sagemaker", endpoint_url=url, config=config),
        session.client("sagemaker-runtime", endpoint_url=url, config=config),
    )


def signed_get(url: str) -> urllib.request.Request:
    """A GET of one of modelhost's own routes, signed with SigV4 (service "logs") by botocore with the usual
    AWS credentials, so it passes a server started with --credentials-file."""
    session = boto_session()
    credentials = session.get_credentials()
    request = AWSRequest(method="GET", url=url)
    if credentials is not None:
        SigV4Auth(credentials.get_frozen_credentials(), "logs", session.region_name or "us-east-1").add_auth(request)
    return urllib.request.Request(url, headers=dict(request.headers.items()))
