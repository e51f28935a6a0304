"""How another front door reaches a leader's fleets (front doors sharing one database).

The leader asks its backend's ``Attachment`` to ``locate`` each live fleet (a ``FleetLocator``, written
to the database with the route); a follower asks its own to ``attach`` to a locator, which gives a
FleetHandle that calls those replicas without running them (``start``/``scale_to`` refuse: the
leader does that), and ``update`` keeps it current as the leader republishes.
"""

from __future__ import annotations

from typing import Protocol

from modelhost.backends.handle import FleetHandle
from modelhost.resources.front_doors import FleetLocator
from modelhost.store.logs import EndpointLog

UNREACHABLE = FleetLocator("")  # a fleet another front door cannot call (answered as no capacity)


class AttachedHandle(FleetHandle, Protocol):
    def update(self, locator: FleetLocator) -> None:
        """The leader republished the fleet (replicas added, removed, healthy or not)."""
        ...


class Attachment(Protocol):
    def locate(self, fleet: FleetHandle) -> FleetLocator:
        """The leader's side: where this fleet's replicas are (UNREACHABLE if others cannot call them)."""
        ...

    def attach(self, variant: str, locator: FleetLocator, log: EndpointLog) -> AttachedHandle:
        """A follower's side: a handle calling the replicas at ``locator``."""
        ...
