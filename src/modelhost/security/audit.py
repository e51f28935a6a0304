"""The audit log: one JSON line per accepted mutating call, in ``<data-dir>/logs/audit.jsonl``.

Each line: ``time`` (ISO 8601 UTC), ``key`` (the credentials section, the IAM user name),
``access_key``, ``action`` (``sagemaker:CreateModel``, ``s3:PutObject``, ...), ``resource`` (an ARN
or ``*``), ``result`` (``success`` or ``failure``) and the HTTP ``status``; plus the request id.
A call refused before it ran (a bad signature, a permission denial) is not an accepted call and is
not written here. The file is created 0600; past ``max_bytes`` it is renamed to ``audit.jsonl.1``
(older ones shift up to ``.<backups>``, the oldest is dropped) and a new one is started.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5


class AuditLog:
    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.fchmod(self._fd, 0o600)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)

    def record(
        self,
        *,
        key: str,
        access_key: str,
        action: str,
        resource: str,
        status: int,
        request_id: str = "",
        now: float | None = None,
    ) -> None:
        stamp = now if now is not None else time.time()
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}Z",
            "key": key,
            "access_key": access_key,
            "action": action,
            "resource": resource,
            "result": "success" if status < 400 else "failure",
            "status": status,
            "request_id": request_id,
        }
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            fd = self._open()
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
                fd = self._open()
            os.write(fd, line)
            self._size += len(line)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
