"""The memory limit of a serverless instance (MemorySizeInMB): its resident memory, children
included, is watched; past the limit the instance is killed and the reason kept, so the request it
was serving fails with "memory limit exceeded" and the next one starts a fresh instance."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

import psutil

INTERVAL = 0.05  # seconds between samples: a model allocating fast is caught within ~50 ms
MB = 1024 * 1024


def resident_bytes(pid: int) -> int:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total


async def watch(pid: int, limit_mb: int, exceeded: Callable[[str], None]) -> None:
    """Until the process exits: kill its process group when it holds more than ``limit_mb``;
    ``exceeded`` gets the reason first."""
    limit = limit_mb * MB
    while True:
        try:
            used = resident_bytes(pid)
        except psutil.Error:
            return  # gone
        if used > limit:
            exceeded(
                f"memory limit exceeded: the instance used {used // MB} MB, more than its MemorySizeInMB of "
                f"{limit_mb} MB; it was stopped"
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            return
        await asyncio.sleep(INTERVAL)
