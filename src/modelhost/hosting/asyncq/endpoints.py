"""Which endpoints are asynchronous, as the endpoints table last said, and their queues.

``apply`` takes the table's records (the control loop reads them once per pass) and keeps the async endpoints,
the set of their names (InvokeEndpoint refuses these; the set object is shared with the
real-time handler, so it is updated in place), and every endpoint name. Requests of an endpoint
not (yet) seen as async wait as orphans; those of a deleted endpoint are handed back to be failed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from modelhost.hosting.asyncq.items import LIVE, AsyncEndpoint, Item
from modelhost.hosting.errors import EndpointNotFound, EndpointNotInService, NotAsyncEndpoint
from modelhost.resources.endpoint import EndpointRecord, EndpointStatus


@dataclass
class Changes:
    """What a sync found: endpoints to send a TestNotification for, requests to fail (with their variant)."""

    created: list[AsyncEndpoint] = field(default_factory=list)
    deleted: list[tuple[Item, str]] = field(default_factory=list)


class EndpointTable:
    def __init__(self) -> None:
        self.endpoints: dict[str, AsyncEndpoint] = {}
        self.names: set[str] = set()  # async endpoint names: InvokeEndpoint refuses these
        self.known: set[str] = set()  # every endpoint name
        self.orphans: dict[str, list[Item]] = {}  # queued for an endpoint not (yet) seen
        self.tested: set[tuple[str, float]] = set()  # (arn, creation time) sent a TestNotification

    def get(self, name: str) -> AsyncEndpoint | None:
        return self.endpoints.get(name)

    def apply(self, records: Iterable[EndpointRecord], initial: bool = False) -> Changes:
        """Every endpoint as the table has it now; ``initial`` (at start): no TestNotification."""
        changes = Changes()
        seen: dict[str, AsyncEndpoint] = {}
        known = set()
        for record in records:
            name = record.name
            known.add(name)
            config = record.deployment.current.config
            async_config = config.get("AsyncInferenceConfig")
            if async_config is None:
                continue
            ep = self.endpoints.get(name)
            variants = [v["VariantName"] for v in config["ProductionVariants"]]
            status = EndpointStatus(record.status).value
            if ep is None:
                ep = AsyncEndpoint(name, status, async_config, variants)
                for item in self.orphans.pop(name, []):
                    heapq.heappush(ep.heap, item)
            ep.status, ep.config, ep.variants = status, async_config, variants
            seen[name] = ep
            marker = (record.arn, record.creation_time)
            if status == EndpointStatus.CREATING and marker not in self.tested:
                self.tested.add(marker)
                if not initial:
                    changes.created.append(ep)
        gone = [ep for name, ep in self.endpoints.items() if name not in seen]
        self.endpoints = seen
        self.names.intersection_update(seen)
        self.names.update(seen)
        self.known = known
        for ep in gone:  # deleted (or no longer async): what still waits there fails visibly
            for item in ep.heap:
                if ep.name in known:
                    self.orphans.setdefault(ep.name, []).append(item)
                else:
                    changes.deleted.append((item, ep.first_variant))
            ep.heap = []
        for name in [n for n in self.orphans if n not in known]:
            changes.deleted.extend((item, "") for item in self.orphans.pop(name))
        return changes

    def queue(self, item: Item) -> None:
        """(Back) into its endpoint's heap, oldest first, or the orphans if the endpoint is not known as async."""
        ep = self.endpoints.get(item.endpoint)
        if ep is None:
            self.orphans.setdefault(item.endpoint, []).append(item)
        else:
            heapq.heappush(ep.heap, item)

    def is_live(self, name: str) -> bool:
        ep = self.endpoints.get(name)
        return ep is not None and ep.status in LIVE

    def accepting(self, name: str) -> AsyncEndpoint:
        """The endpoint a new request may be queued on; a domain error (hosting/errors.py) if none."""
        ep = self.endpoints.get(name)
        if ep is None:
            if name in self.known:
                raise NotAsyncEndpoint(name)
            raise EndpointNotFound(name)
        if ep.status not in LIVE:
            raise EndpointNotInService(name, ep.status)
        return ep
