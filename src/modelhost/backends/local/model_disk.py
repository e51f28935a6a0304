"""The disk tier of a multi-model fleet: TargetModel archives fetched from the prefix and extracted once,
shared by the fleet's instances, least-recently-used ones deleted when the bytes exceed the budget.

A model being loaded is pinned (its files are not deleted under the loader). Downloads are
single-flight: concurrent fetches of one TargetModel share one download and extraction.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from modelhost.backends.multimodel import TargetModelMissing
from modelhost.store.artifacts import ArtifactCache, ArtifactError
from modelhost.store.blobs import BlobError, BlobNotFound


class ModelDataInvalid(Exception):
    """The object exists but cannot be used (not a valid archive, over the limits); the message says why."""


@dataclass
class DiskEntry:
    path: Path
    size: int


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def model_uri(prefix: str, target: str) -> str:
    """SageMaker's absolute model URL: the prefix, then the TargetModel (a relative path)."""
    return prefix if prefix.endswith("/") and not target else prefix.rstrip("/") + "/" + target


def bucket_and_key(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return parsed.netloc, parsed.path.lstrip("/")
    return "", parsed.path or uri


class DiskTier:
    def __init__(self, artifacts: ArtifactCache, root: Path, prefix: str, budget_bytes: int, max_bytes: int) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.cache = ArtifactCache(artifacts.blobs, root, artifacts.allowed_dirs, max_bytes)
        self.root = root
        self.prefix = prefix
        self.budget = budget_bytes
        self.entries: OrderedDict[str, DiskEntry] = OrderedDict()
        self.pins: Counter[str] = Counter()
        self._fetches: dict[str, asyncio.Task[DiskEntry]] = {}
        self.deleted = 0
        self.users = 0  # instances using the tier (the last one to stop removes it)

    @property
    def used(self) -> int:
        return sum(e.size for e in self.entries.values())

    async def fetch(self, target: str) -> tuple[Path, float | None]:
        """The extracted model dir and the download time (None when it was on disk already)."""
        entry = self.entries.get(target)
        if entry is not None and entry.path.is_dir():
            self.entries.move_to_end(target)
            return entry.path, None
        task = self._fetches.get(target)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._download(target))
            self._fetches[target] = task
            task.add_done_callback(lambda _t: self._fetches.pop(target, None))
        started = time.monotonic()
        entry = await asyncio.shield(task)
        return entry.path, time.monotonic() - started

    async def _download(self, target: str) -> DiskEntry:
        uri = model_uri(self.prefix, target)
        parts = target.split("/")
        if target.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise TargetModelMissing(*bucket_and_key(uri))
        path = await asyncio.to_thread(self._materialize, uri)
        entry = DiskEntry(path, await asyncio.to_thread(_du, path))
        self.entries[target] = entry
        self.entries.move_to_end(target)
        await asyncio.to_thread(self._evict, target)
        return entry

    def _materialize(self, uri: str) -> Path:
        try:
            self.cache.blobs.stat(uri)
        except (BlobNotFound, BlobError):
            raise TargetModelMissing(*bucket_and_key(uri)) from None
        try:
            return self.cache.materialize(uri, None)
        except ArtifactError as exc:
            raise ModelDataInvalid(str(exc)) from None

    def _evict(self, keep: str) -> None:
        """Delete least-recently-used extracted models until the tier fits its budget."""
        for target in list(self.entries):
            if self.used <= self.budget:
                return
            if target == keep or self.pins[target]:
                continue
            entry = self.entries.pop(target)
            shutil.rmtree(entry.path, ignore_errors=True)
            self.deleted += 1

    def pin(self, target: str) -> None:
        self.pins[target] += 1

    def unpin(self, target: str) -> None:
        self.pins[target] -= 1
        if self.pins[target] <= 0:
            del self.pins[target]

    def drop(self, target: str) -> None:
        """Forget a model's files (ModelCacheSetting Disabled: unloaded and deleted after each invocation)."""
        entry = self.entries.pop(target, None)
        if entry is not None and not self.pins[target]:
            shutil.rmtree(entry.path, ignore_errors=True)
        elif entry is not None:
            self.entries[target] = entry

    def clear(self) -> None:
        """Delete every extracted model (the directory is made again by the next download)."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.entries.clear()
