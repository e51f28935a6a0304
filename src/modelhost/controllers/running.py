"""What runs for each endpoint, as the control loop keeps it in memory (never in the database)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from modelhost.backends.handle import FleetHandle
from modelhost.hosting.router import EndpointRoute
from modelhost.resources.endpoint import VariantView


@dataclass
class Running:
    """One deployed config of an endpoint: its fleets (one per variant, shadows included) and its route."""

    name: str
    config_name: str
    fleets: dict[str, FleetHandle] = field(default_factory=dict)
    route: EndpointRoute | None = None
    # variant -> VariantStatus entries shown by DescribeEndpoint (Updating, ActivatingTraffic, ...)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pending: Running | None = None  # the green side of a blue/green update

    def view(self) -> dict[str, VariantView]:
        """DescribeEndpoint's view of these fleets (read from the control plane's worker threads)."""
        route = self.route
        weights = {v.name: v.weight for v in route.variants} if route else {}
        if route is not None and route.green is not None:
            # During a traffic shift the blue fleet's weights scale by what it still receives.
            weights = {k: w * (1.0 - route.green_share) for k, w in weights.items()}
        out: dict[str, VariantView] = {}
        for name, fleet in list(self.fleets.items()):
            statuses = list(self.statuses.get(name, []))
            for message in list(fleet.crash_loops.values()):
                statuses.append({"Status": "Updating", "StatusMessage": message, "StartTime": time.time()})
            out[name] = VariantView(weights.get(name, 0.0), fleet.healthy_count, tuple(statuses))
        return out


class RunningEndpoints:
    """Endpoint key (lower-case name) -> Running; the read-only view the control plane and the autoscaler use."""

    def __init__(self) -> None:
        self.by_key: dict[str, Running] = {}

    def get(self, endpoint: str) -> Running | None:
        return self.by_key.get(endpoint.lower())

    def variant_view(self, endpoint: str) -> dict[str, VariantView]:
        running = self.get(endpoint)
        return running.view() if running else {}

    def pending_view(self, endpoint: str) -> dict[str, VariantView]:
        running = self.get(endpoint)
        return running.pending.view() if running and running.pending else {}

    def fleet(self, endpoint: str, variant: str) -> FleetHandle | None:
        """The serving fleet of a variant, or None when not running or while a blue/green update runs."""
        running = self.get(endpoint)
        if running is None or running.pending is not None:
            return None
        return running.fleets.get(variant)
