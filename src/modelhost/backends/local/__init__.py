"""The local backend: every replica is a process on this machine serving the container contract
on a unix socket (instances.py), kept at its count by a Fleet (fleet.py)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from modelhost.backends.handle import FleetHandle, FleetRequest
from modelhost.backends.local.fleet import Fleet
from modelhost.backends.local.specs import instance_spec
from modelhost.config import Settings
from modelhost.store.artifacts import ArtifactCache


class LocalBackend:
    def __init__(self, settings: Settings, artifacts: ArtifactCache) -> None:
        self.settings = settings
        self.artifacts = artifacts
        # Unix socket paths are limited to ~107 bytes, so sockets live in a short temp dir.
        self.run_dir = Path(tempfile.mkdtemp(prefix="mh-"))

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
        return Fleet(spec, request.count, self.run_dir, request.log, self.settings.ping_interval)

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self.run_dir)
