"""``modelhost env``: the environment that points unmodified AWS code (boto3, the AWS CLI, the
sagemaker SDK) at a modelhost server, as shell lines.

What each variable is for:

* ``AWS_ENDPOINT_URL``: every botocore client built without an explicit ``endpoint_url`` (SageMaker,
  SageMaker Runtime, S3, IAM, STS, Logs, Application Auto Scaling, ...).
* ``AWS_DEFAULT_REGION`` / ``AWS_REGION``: the server's region (ARNs, the default bucket's name).
* ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``): any pair when the server
  does not authenticate; when it does, the keys this shell's AWS configuration resolves (the server
  never hands out keys).
* ``SAGEMAKER_USER_CONFIG_OVERRIDE``: the SDK defaults file the server writes (server/client_config.py).
* ``BOTOCORE_EXPERIMENTAL__PLUGINS``: the SDK's explicit STS URL (botocore_plugin.py).
* ``AWS_PAGER`` empty: the AWS CLI prints instead of opening a pager; ``MODELHOST_URL``: the modelhost CLI.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelhost.client import boto_session, signed_get

CONFIG_PATH = "/modelhost/client-config"
PLUGIN = "modelhost=modelhost.botocore_plugin"
SHELLS = ("sh", "fish", "powershell", "dotenv")
DOTENV_SPECIAL = " #\"'$"


@dataclass(frozen=True)
class ServerInfo:
    region: str
    account_id: str
    role_arn: str
    authenticated: bool
    sdk_config_file: str
    sdk_config: dict[str, Any]


def server_info(url: str, timeout: float = 10) -> ServerInfo:
    """What the server tells clients (``GET /modelhost/client-config``, signed like every call)."""
    with urllib.request.urlopen(signed_get(url.rstrip("/") + CONFIG_PATH), timeout=timeout) as response:
        doc = json.loads(response.read())
    return ServerInfo(
        region=doc["Region"],
        account_id=doc["AccountId"],
        role_arn=doc["RoleArn"],
        authenticated=bool(doc["Authenticated"]),
        sdk_config_file=doc["SageMakerConfigFile"],
        sdk_config=doc["SageMakerConfig"],
    )


def local_sdk_config(url: str, info: ServerInfo) -> str:
    """The defaults file's path on this machine: the server's own when it is here (the same
    content), else a copy under ``~/.config/modelhost/<host>_<port>/``."""
    server_file = Path(info.sdk_config_file)
    try:
        if json.loads(server_file.read_text(encoding="utf-8")) == info.sdk_config:
            return str(server_file)
    except (OSError, ValueError):
        pass
    parts = urlsplit(url)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = base / "modelhost" / f"{parts.hostname}_{parts.port or 80}" / "sagemaker-config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info.sdk_config, indent=2) + "\n", encoding="utf-8")
    return str(path)


def variables(url: str, info: ServerInfo, sdk_config_file: str) -> tuple[dict[str, str], str | None]:
    """(the variables, a warning for stderr or None)."""
    env = {
        "AWS_ENDPOINT_URL": url.rstrip("/"),
        "AWS_DEFAULT_REGION": info.region,
        "AWS_REGION": info.region,
    }
    warning = None
    if not info.authenticated:
        env["AWS_ACCESS_KEY_ID"] = "modelhost"
        env["AWS_SECRET_ACCESS_KEY"] = "modelhost"
    else:
        credentials = boto_session().get_credentials()
        if credentials is None:
            warning = "the server requires signed requests and no AWS credentials are configured here"
        else:
            frozen = credentials.get_frozen_credentials()
            env["AWS_ACCESS_KEY_ID"] = frozen.access_key
            env["AWS_SECRET_ACCESS_KEY"] = frozen.secret_key
            if frozen.token:
                env["AWS_SESSION_TOKEN"] = frozen.token
    env["SAGEMAKER_USER_CONFIG_OVERRIDE"] = sdk_config_file
    env["BOTOCORE_EXPERIMENTAL__PLUGINS"] = PLUGIN
    env["AWS_PAGER"] = ""
    env["MODELHOST_URL"] = url.rstrip("/")
    return env, warning


def _quote_sh(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def render(env: dict[str, str], shell: str) -> str:
    """The lines for ``eval "$(modelhost env)"`` (sh), fish, PowerShell or a .env file."""
    lines = []
    for name, value in env.items():
        if shell == "fish":
            lines.append(f"set -gx {name} {_quote_sh(value)};")
        elif shell == "powershell":
            lines.append(f"$Env:{name} = '{value.replace(chr(39), chr(39) * 2)}'")
        elif shell == "dotenv":
            needs_quotes = any(c in value for c in DOTENV_SPECIAL)
            lines.append(f"{name}={json.dumps(value) if needs_quotes else value}")
        else:
            lines.append(f"export {name}={_quote_sh(value)}")
    return "\n".join(lines) + "\n"
