"""Per-endpoint log streams: every instance's stdout/stderr and the platform's lifecycle lines,
one file per endpoint (what CloudWatch's /aws/sagemaker/Endpoints/<name> is on AWS)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO


class EndpointLog:
    def __init__(self, logs_dir: Path, endpoint: str) -> None:
        self.path = endpoint_log_path(logs_dir, endpoint)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives with the endpoint

    def write(self, source: str, line: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        self._file.write(f"{stamp} [{source}] {line.rstrip()}\n")

    def close(self) -> None:
        self._file.close()


def endpoint_log_path(logs_dir: Path, endpoint: str) -> Path:
    return logs_dir / "endpoints" / f"{endpoint}.log"
