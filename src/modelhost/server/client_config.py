"""What an unmodified AWS client needs to know to target this server (``modelhost env`` reads it).

At start-up the server writes a sagemaker-SDK defaults file (the SDK reads it from
``SAGEMAKER_USER_CONFIG_OVERRIDE``) into ``<data-dir>/client/sagemaker-config.yaml``:

* ``SageMaker.PythonSDK.Modules.Session.DefaultS3Bucket``: ``sagemaker-<region>-<account>``, so
  ``Session.default_bucket()`` never asks the regional STS URL the SDK builds itself for the account;
* ``SageMaker.PythonSDK.Modules.TelemetryOptOut``: the SDK's usage pings go to a regional S3 URL it
  builds itself (``sm-pysdk-t-<region>.s3.<region>.amazonaws.com``), which no endpoint setting reaches.

``GET /modelhost/client-config`` answers the region, account, role, whether requests must be signed,
the file's path and its content (a client on another machine writes its own copy).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelhost.config import Settings

PATH = "/modelhost/client-config"
FILE = Path("client") / "sagemaker-config.yaml"


def sdk_defaults(settings: Settings) -> dict[str, Any]:
    return {
        "SchemaVersion": "1.0",
        "SageMaker": {
            "PythonSDK": {
                "Modules": {
                    "Session": {"DefaultS3Bucket": f"sagemaker-{settings.region}-{settings.account_id}"},
                    "TelemetryOptOut": True,
                }
            }
        },
    }


def write_sdk_defaults(settings: Settings) -> Path:
    """Write the defaults file (JSON is YAML; the SDK reads it with yaml.safe_load) atomically."""
    path = settings.data_dir / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sdk_defaults(settings), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def describe(settings: Settings) -> dict[str, Any]:
    return {
        "Region": settings.region,
        "AccountId": settings.account_id,
        "RoleArn": settings.role_arn,
        "Authenticated": bool(settings.credentials_file),
        "SageMakerConfigFile": str(settings.data_dir / FILE),
        "SageMakerConfig": sdk_defaults(settings),
    }


def route(settings: Settings) -> Route:
    async def client_config(_request: Request) -> Response:
        return JSONResponse(describe(settings))

    return Route(PATH, client_config, methods=["GET"])
