"""Per-endpoint log streams: every instance's stdout/stderr and the platform's lifecycle lines,
one file per endpoint (what CloudWatch's /aws/sagemaker/Endpoints/<name> is on AWS)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TextIO


def open_private(path: Path) -> TextIO:
    """Append to a log file that only the server's user can read (0600, whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return open(fd, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives with the endpoint or job


class EndpointLog:
    def __init__(self, logs_dir: Path, endpoint: str) -> None:
        self.path = endpoint_log_path(logs_dir, endpoint)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = open_private(self.path)

    def write(self, source: str, line: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        self._file.write(f"{stamp} [{source}] {line.rstrip()}\n")

    def close(self) -> None:
        self._file.close()


def endpoint_log_path(logs_dir: Path, endpoint: str) -> Path:
    return logs_dir / "endpoints" / f"{endpoint}.log"


PLATFORM = "transform"  # log source of a transform job runner's own lines


def job_log_path(logs_dir: Path, job: str) -> Path:
    return logs_dir / "transform-jobs" / f"{job}.log"


class JobLog(EndpointLog):
    """A transform job's log stream: its instances' output and the runner's lines (CloudWatch's
    ``/aws/sagemaker/TransformJobs`` streams are read from this file)."""

    def __init__(self, logs_dir: Path, job: str) -> None:  # noqa: D107 - same format as endpoint logs
        self.path = job_log_path(logs_dir, job)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = open_private(self.path)


def function_log_path(logs_dir: Path, function: str) -> Path:
    return logs_dir / "lambda" / f"{function}.log"


class FunctionLog(EndpointLog):
    """A Lambda function's log (CloudWatch's ``/aws/lambda/<name>``): its instances' output, with the
    START / END / REPORT lines of every invocation, and the platform's lines."""

    def __init__(self, logs_dir: Path, function: str) -> None:  # noqa: D107 - same format as endpoint logs
        self.path = function_log_path(logs_dir, function)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = open_private(self.path)
