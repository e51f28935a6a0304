"""Model affinity for multi-model endpoints: a TargetModel's requests go to the instance that already
holds it.

Consistent hashing over the fleet's available replicas (virtual nodes per replica): a model's home is
the first replica clockwise from its hash, so adding or removing an instance moves only the models
whose home it was (about 1/n of them), never reloading every model. A hot model spills over to the
next replica on the ring when its home is busy and the model has already been served there (so a
burst of first requests all wait on one load instead of loading it twice).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

from modelhost.backends.handle import FleetHandle, Replica

VIRTUAL_NODES = 64
SPILL_OUTSTANDING = 4  # a home replica with this many requests in flight sends a warm model's next one on


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class ModelAffinity:
    def __init__(self, spill_outstanding: int = SPILL_OUTSTANDING) -> None:
        self.spill_outstanding = spill_outstanding
        self._members: tuple[str, ...] = ()
        self._points: list[int] = []
        self._owners: list[str] = []
        self._warm: dict[str, set[str]] = {}  # replica name -> models it has answered for
        self.spilled = 0

    def _rebuild(self, names: tuple[str, ...]) -> None:
        ring = sorted((_hash(f"{name}#{i}"), name) for name in names for i in range(VIRTUAL_NODES))
        self._points = [p for p, _ in ring]
        self._owners = [n for _, n in ring]
        self._members = names
        for gone in set(self._warm) - set(names):
            del self._warm[gone]

    def homes(self, target: str, replicas: Sequence[Replica]) -> list[Replica]:
        """The target's home replica and the next distinct one on the ring (fewer if the fleet is smaller)."""
        available = {r.name: r for r in replicas if r.available}
        names = tuple(sorted(available))
        if names != self._members:
            self._rebuild(names)
        if not names:
            return []
        start = bisect.bisect(self._points, _hash(target)) % len(self._points)
        out: list[Replica] = []
        for i in range(len(self._points)):
            name = self._owners[(start + i) % len(self._points)]
            replica = available[name]
            if replica not in out:
                out.append(replica)
                if len(out) == 2:
                    break
        return out

    def pick(self, fleet: FleetHandle, target: str) -> Replica | None:
        """The replica for this request, counted as busy (``FleetHandle.claim``); None if none is available."""
        homes = self.homes(target, fleet.replicas())
        if not homes:
            return None
        choice = homes[0]
        if (
            len(homes) > 1
            and choice.outstanding >= self.spill_outstanding
            and homes[1].outstanding < choice.outstanding
            and target in self._warm.get(choice.name, ())
        ):
            choice = homes[1]
            self.spilled += 1
        fleet.claim(choice)
        return choice

    def served(self, replica: Replica, target: str) -> None:
        self._warm.setdefault(replica.name, set()).add(target)
