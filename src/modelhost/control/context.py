"""What every control-plane operation needs: settings, the metadata store and a way to wake
the reconciler, plus a read-only view of what is running."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelhost.config import Settings
from modelhost.resources.endpoint import VariantView
from modelhost.store.blobs import BlobStore
from modelhost.store.db import MetadataStore


class RunningView(Protocol):
    """What the control loop reports about an endpoint's fleets (controllers/reconciler.py), by variant name."""

    def variant_view(self, endpoint: str) -> dict[str, VariantView]:
        """The fleets serving now."""
        ...

    def pending_view(self, endpoint: str) -> dict[str, VariantView]:
        """The fleets of a config being deployed by UpdateEndpoint."""
        ...


class _NothingRunning:
    def variant_view(self, endpoint: str) -> dict[str, VariantView]:
        return {}

    def pending_view(self, endpoint: str) -> dict[str, VariantView]:
        return {}


@dataclass
class ControlContext:
    settings: Settings
    store: MetadataStore
    blobs: BlobStore
    wake: Callable[[], None] = lambda: None  # ask the control loop for a pass now (thread-safe)
    running: RunningView = field(default_factory=_NothingRunning)

    @staticmethod
    def now() -> float:
        # Millisecond precision, as SageMaker's timestamps: a CreationTime a client got back (and
        # sends as CreationTimeBefore/After) then compares equal to the stored value.
        return round(time.time(), 3)

    def arn(self, resource: str, name: str) -> str:
        return self.settings.arn(resource, name)


Request = dict[str, Any]
Response = dict[str, Any]
