"""The local backend: every replica is a process on this machine serving the container contract
on a unix socket (instances.py), kept at its count by a Fleet (fleet.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from modelhost.backends.handle import FleetHandle, FleetRequest
from modelhost.backends.local.fleet import Fleet
from modelhost.backends.local.instances import MODEL_SCOPED_PREFIXES
from modelhost.backends.local.specs import instance_spec
from modelhost.backends.local.templates import Templates
from modelhost.config import Settings
from modelhost.store.artifacts import ArtifactCache


class LocalBackend:
    def __init__(self, settings: Settings, artifacts: ArtifactCache) -> None:
        self.settings = settings
        self.artifacts = artifacts
        # Unix socket paths are limited to ~107 bytes, so sockets live in a short temp dir.
        self.run_dir = Path(tempfile.mkdtemp(prefix="mh-"))
        # Serverless fleets fork their instances from a pre-imported template per runtime.
        self.templates = Templates(self.run_dir, settings.python or sys.executable)
        self._warming: set[asyncio.Task[None]] = set()

    async def create_fleet(self, request: FleetRequest) -> FleetHandle:
        spec = await instance_spec(
            self.settings,
            self.artifacts,
            owner=request.owner,
            variant=request.variant,
            model=request.model,
            label=request.label,
            extra_env=request.extra_env,
            startup_timeout=request.startup_timeout,
            download_timeout=request.download_timeout,
            volume_size_gb=request.volume_size_gb,
            instance_type=request.instance_type,
            events=request.events,
        )
        if request.serverless is not None:
            template = self.templates.for_runtime(spec.runtime, self._template_env())
            spec = replace(spec, template=template, memory_limit_mb=request.serverless.memory_mb)
            warming = asyncio.get_running_loop().create_task(self._warm(template.ready()))
            self._warming.add(warming)
            warming.add_done_callback(self._warming.discard)
        return Fleet(spec, request.count, self.run_dir, request.log, self.settings.ping_interval)

    def _template_env(self) -> dict[str, str]:
        """What a template starts with: the instances' base environment (no model settings)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(MODEL_SCOPED_PREFIXES)}
        env.update({"MODELHOST_HF_CACHE": str(self.settings.hf_cache_dir), "PYTHONUNBUFFERED": "1"})
        return env

    @staticmethod
    async def _warm(ready: object) -> None:
        """Start the template ahead of the first cold start; a failure shows at that start instead."""
        with contextlib.suppress(Exception):
            await ready  # type: ignore[misc]

    async def close(self) -> None:
        for task in self._warming:
            task.cancel()
        await self.templates.close()
        with contextlib.suppress(OSError):
            os.rmdir(self.run_dir)
