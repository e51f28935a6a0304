"""The CLI side of inspect / export / serve-model: clients for ``--url``, the printed report."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from modelhost.export.inspect import Inspection


def server_clients(url: str) -> tuple[Any, Any, Any]:
    """(sagemaker, s3, application-autoscaling) clients for the server at ``url``."""
    from botocore.config import Config

    from modelhost.client import boto_session

    session = boto_session()
    config = Config(retries={"mode": "standard", "max_attempts": 2})
    return (
        session.client("sagemaker", endpoint_url=url, config=config),
        session.client("s3", endpoint_url=url, config=config),
        session.client("application-autoscaling", endpoint_url=url, config=config),
    )


def version() -> str:
    try:
        return importlib.metadata.version("modelhost")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def report(label: str, model_dir: Path, found: Inspection) -> str:
    lines = [
        f"artifact: {label}",
        f"extracted to: {model_dir}",
        "",
        f"files ({len(found.files)}, {_size(found.total_size)}):",
    ]
    lines += [f"  {_size(f.size):>10}  {f.path}" for f in found.files]
    lines += ["", f"runtime: {found.runtime or 'unknown'}", f"why: {found.reason}"]
    if found.inference_script:
        handlers = (
            ", ".join(found.handlers)
            if found.handlers
            else "none of model_fn/input_fn/predict_fn/output_fn/transform_fn"
        )
        lines.append(f"{found.inference_script} defines: {handlers}")
    else:
        lines.append("code/inference.py: none (the runtime's default handlers)")
    lines += ["", "load it outside modelhost:", "", found.snippet]
    return "\n".join(lines)
