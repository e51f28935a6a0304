"""The seam between a transform job and what runs its model: a ``TransformExecutor`` starts the
model's copies (and says the job's execution parameters), transforms the pending input objects and
reports each object to the job's ``JobSink``; jobs/runner.py owns everything else (listing, resume,
progress, Stop, capture, the final status).

Two executors: local instance processes (jobs/local_executor.py) and a Ray Data pipeline
(jobs/ray_executor.py, ``--backend ray``). Both use the same splitting, packing, filters and
assembly (jobs/records.py, jobs/output.py), so their outputs are byte-identical.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from modelhost.jobs.filters import DataProcessing
from modelhost.jobs.inputs import InputObject
from modelhost.jobs.output import ObjectOutput
from modelhost.jobs.params import ExecutionParameters
from modelhost.jobs.state import Progress
from modelhost.store.blobs import BlobStore
from modelhost.store.logs import JobLog


@dataclass(frozen=True)
class TransformPlan:
    """What an executor is given: the job and the model it runs."""

    name: str
    spec: dict[str, Any]  # the CreateTransformJob request
    model: dict[str, Any]  # the frozen CreateModel request
    model_name: str
    log: JobLog


class JobSink(Protocol):
    """Where an executor reports objects. The methods block (call them from a thread)."""

    blobs: BlobStore
    progress: Progress
    processing: DataProcessing | None

    def open_output(self, obj: InputObject) -> ObjectOutput: ...

    def object_completed(self, obj: InputObject, records: int, output: ObjectOutput, where: str) -> None: ...

    def object_failed(self, obj: InputObject, reason: str, records: int) -> None: ...


class TransformExecutor(Protocol):
    async def start(self) -> ExecutionParameters:
        """Start the model's copies; raises DeploymentFailed (or InstanceFailed) with the reason."""
        ...

    async def run(self, pending: deque[InputObject], sink: JobSink) -> None:
        """Transform every pending object (popped from the left), each reported to ``sink`` once."""
        ...

    async def shutdown(self, fast: bool) -> None:
        """Stop everything; ``fast``: the job is stopped or the server shuts down (no draining).
        Returns only when no object can be reported any more."""
        ...
