"""What every control-plane operation needs: settings, the metadata store and a way to wake
the reconciler, plus a read-only view of what is running."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelhost.config import Settings
from modelhost.store.db import MetadataStore
from modelhost.store.objects import ObjectStore


class RunningView(Protocol):
    """What the data plane reports about an endpoint's fleets (see hosting.reconciler).

    Each maps variant name -> {"current_weight": float, "current_count": int,
    "statuses": [{"Status", "StatusMessage"?, "StartTime"}]}.
    """

    def variant_view(self, endpoint: str) -> dict[str, dict[str, Any]]:
        """The fleets serving now."""
        ...

    def pending_view(self, endpoint: str) -> dict[str, dict[str, Any]]:
        """The fleets of a config being deployed by UpdateEndpoint."""
        ...


class _NothingRunning:
    def variant_view(self, endpoint: str) -> dict[str, dict[str, Any]]:
        return {}

    def pending_view(self, endpoint: str) -> dict[str, dict[str, Any]]:
        return {}


@dataclass
class ControlContext:
    settings: Settings
    store: MetadataStore
    objects: ObjectStore
    wake_reconciler: Callable[[], None] = lambda: None
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
