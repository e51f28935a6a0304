"""What a backend's multi-model replicas tell the data plane (backend-neutral): the refusals that are not
model errors, and the events behind SageMaker's MME metrics."""

from __future__ import annotations

from typing import Protocol


class MultiModelRefusal(Exception):
    """A multi-model request that no container answered."""


class TargetModelMissing(MultiModelRefusal):
    """No object at prefix + TargetModel."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"no model data at s3://{bucket}/{key}")
        self.bucket = bucket
        self.key = key


class TargetModelNotReady(MultiModelRefusal):
    """Still loading after the wait budget; the load goes on and a retry finds it."""

    def __init__(self, target: str, waited: float) -> None:
        super().__init__(f"{target} still loading after {waited:g}s")
        self.target = target
        self.waited = waited


class MultiModelEvents(Protocol):
    """Called by a replica's model cache (hosting/multimodel_metrics.py records them)."""

    def cache_hit(self, hit: bool) -> None: ...

    def loading_wait(self, seconds: float) -> None:
        """A request waited this long for its model to be downloaded and loaded (0 when it was loaded)."""
        ...

    def downloaded(self, seconds: float) -> None: ...

    def loaded(self, seconds: float) -> None: ...

    def unloaded(self, seconds: float) -> None: ...

    def loaded_count(self, replica: str, count: int) -> None: ...


class NoEvents:
    def cache_hit(self, hit: bool) -> None:
        pass

    def loading_wait(self, seconds: float) -> None:
        pass

    def downloaded(self, seconds: float) -> None:
        pass

    def loaded(self, seconds: float) -> None:
        pass

    def unloaded(self, seconds: float) -> None:
        pass

    def loaded_count(self, replica: str, count: int) -> None:
        pass
