"""Batch transform data capture (``DataCaptureConfig``): what the job read and wrote, as manifests.

AWS documents ("Capture data from batch transform job") that a transform job with a
``DataCaptureConfig`` logs its captured data under ``DestinationS3Uri`` as manifest files, input
and output apart::

    <DestinationS3Uri>/input/<yyyy>/<mm>/<dd>/<hh>/<name>.json
    <DestinationS3Uri>/output/<yyyy>/<mm>/<dd>/<hh>/<name>.json

each in the manifest format of ``S3DataType=ManifestFile``: a JSON array ``[{"prefix": "s3://…/"},
"relative-key", …]``. The input manifest lists the input objects, the output manifest their
``.out`` objects, so the records themselves (with ``SageMakerInferenceId`` /
``SageMakerInferenceTime``, or the two trailing CSV columns, when ``GenerateInferenceId`` is set)
are the job's output objects the output manifest names.

Where AWS is silent, modelhost decides (``docs/architecture.md``, "Batch transform"):

* One pair of manifests per job, written when the job ends ``Completed`` or ``Failed`` (before the
  status is set, so a waiter that sees the final status finds them), listing only the objects that
  completed, sorted by key; a failed object is in neither manifest. A job with no completed object,
  and a stopped job, write nothing.
* The input manifest's prefix is the job's input prefix (the directory part of an ``S3Prefix``, or
  the prefix of an input ``ManifestFile``) and its keys the objects' paths relative to it; the
  output manifest's prefix is ``S3OutputPath`` + ``/`` and its keys ``<relative path>.out``.
* ``<hh>`` is the UTC hour of the job's start (``TransformStartTime``, also the
  ``SageMakerInferenceTime`` of the records); ``<name>`` is a UUID derived from the job's ARN and
  start time, the same for the input and output manifest. A job resumed after a restart therefore
  rewrites the same two keys instead of adding a second pair.
* Each file is written atomically (the BlobStore's ``put_bytes``: temp file + rename into the bucket
  store, one PUT remotely).
  ``KmsKeyId`` is accepted and ignored.
* If the manifests cannot be written (e.g. the destination bucket does not exist), a job that
  would have completed ends ``Failed`` with a ``ClientError`` naming ``DestinationS3Uri``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from modelhost.jobs.assemble import delete_output
from modelhost.store.blobs import BlobError, BlobNotFound, BlobStore
from modelhost.store.logs import PLATFORM, EndpointLog

log = logging.getLogger("modelhost.jobs")

CONTENT_TYPE = "application/json"
OUT_SUFFIX = ".out"


class CaptureError(Exception):
    """The capture manifests could not be written; the message is meant for FailureReason."""


@dataclass(frozen=True)
class CapturedObject:
    input_uri: str  # the input object as read
    output_uri: str  # its .out object
    rel: str = ""  # its path relative to the input prefix (and, + ".out", to S3OutputPath)

    @classmethod
    def of(cls, input_uri: str, output_uri: str, output_path: str) -> CapturedObject:
        """Recover the relative path from the output URI (``<S3OutputPath>/<rel>.out``)."""
        base = output_path.rstrip("/") + "/"
        rel = ""
        if output_uri.startswith(base) and output_uri.endswith(OUT_SUFFIX):
            rel = output_uri[len(base) : -len(OUT_SUFFIX)]
        if not rel or not input_uri.endswith(rel):
            rel = ""
        return cls(input_uri, output_uri, rel)


def hour_prefix(when: float) -> str:
    """``yyyy/mm/dd/hh`` (UTC)."""
    return time.strftime("%Y/%m/%d/%H", time.gmtime(when))


def capture_name(job_arn: str, start: float) -> str:
    """The manifests' file name (without ``.json``): stable for one run of one job."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{job_arn}@{start:.3f}"))


def capture_uris(destination: str, when: float, name: str) -> tuple[str, str]:
    """(input manifest URI, output manifest URI)."""
    base = destination.rstrip("/")
    hour = hour_prefix(when)
    return f"{base}/input/{hour}/{name}.json", f"{base}/output/{hour}/{name}.json"


def manifest(uris: Iterable[str], prefix: str | None = None) -> list:
    """``[{"prefix": P}, rel, …]``: P is ``prefix`` when every URI starts with it, else the longest
    common ``/``-ending prefix of the URIs."""
    items = list(uris)
    if prefix is None or not all(uri.startswith(prefix) for uri in items):
        common = items[0] if items else ""
        for uri in items[1:]:
            n = 0
            for a, b in zip(common, uri, strict=False):
                if a != b:
                    break
                n += 1
            common = common[:n]
        prefix = common[: common.rfind("/") + 1]
    return [{"prefix": prefix}, *(uri[len(prefix) :] for uri in items)]


def _job_prefix(prefixes: set[str]) -> str | None:
    return next(iter(prefixes)) if len(prefixes) == 1 else None


def manifests(captured: Iterable[CapturedObject]) -> tuple[bytes, bytes]:
    """The input and output manifest documents for the completed objects (sorted by input key).

    The prefixes are the job's own: the input prefix the relative paths are relative to, and
    ``S3OutputPath`` (with a trailing ``/``)."""
    done = sorted(captured, key=lambda c: c.input_uri)
    known = all(c.rel for c in done)
    in_prefix = _job_prefix({c.input_uri[: -len(c.rel)] for c in done}) if known else None
    out_prefix = _job_prefix({c.output_uri[: -len(c.rel + OUT_SUFFIX)] for c in done}) if known else None
    inputs = manifest((c.input_uri for c in done), in_prefix)
    outputs = manifest((c.output_uri for c in done), out_prefix)
    return _dump(inputs), _dump(outputs)


def _dump(doc: list) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def put_atomic(blobs: BlobStore, uri: str, data: bytes) -> None:
    """Write one object so that it appears whole or not at all (the BlobStore's put is atomic)."""
    try:
        blobs.put_bytes(uri, data, CONTENT_TYPE)
    except (BlobError, BlobNotFound) as exc:
        raise CaptureError(str(exc)) from exc
    except Exception as exc:
        raise CaptureError(f"{type(exc).__name__}: {exc}") from exc


def write_capture(
    blobs: BlobStore,
    destination: str,
    captured: list[CapturedObject],
    when: float,
    name: str,
) -> list[str]:
    """Write the input and output manifests; the URIs written (none without completed objects).

    The output manifest goes first, the input manifest last: a reader that finds the input
    manifest finds its output manifest too."""
    if not captured:
        return []
    in_uri, out_uri = capture_uris(destination, when, name)
    in_doc, out_doc = manifests(captured)
    for uri, data in ((out_uri, out_doc), (in_uri, in_doc)):
        try:
            put_atomic(blobs, uri, data)
        except CaptureError as exc:
            raise CaptureError(
                f"Could not write the captured data to DataCaptureConfig.DestinationS3Uri {destination}: {exc}"
            ) from None
    return [in_uri, out_uri]


@dataclass(frozen=True)
class JobCapture:
    """What data capture needs of a finishing job (the runner builds it)."""

    name: str
    arn: str
    spec: dict[str, Any]
    start: float  # TransformStartTime (or the creation time)
    blobs: BlobStore
    log: EndpointLog
    finished_objects: Callable[[], dict[str, dict[str, Any]]]  # input URI -> its transform_job_objects row
    stop_requested: Callable[[], bool]


async def capture_job(job: JobCapture, status: str, reason: str | None) -> tuple[str, str | None]:
    """The runner's hook at the end of a job (not a stopped one): write the capture manifests for
    the objects that completed; (status, reason), turned ``Failed`` if they cannot be written."""
    config = job.spec.get("DataCaptureConfig") or {}
    destination = config.get("DestinationS3Uri")
    if not destination:
        return status, reason

    output_path = job.spec["TransformOutput"]["S3OutputPath"]

    def run() -> list[str]:
        captured = [
            CapturedObject.of(key, info["output_uri"], output_path)
            for key, info in job.finished_objects().items()
            if info["status"] == "Completed" and info["output_uri"]
        ]
        return write_capture(job.blobs, destination, captured, job.start, capture_name(job.arn, job.start))

    task = asyncio.ensure_future(asyncio.to_thread(run))
    try:
        written = await asyncio.shield(task)
    except asyncio.CancelledError:
        # stopped while writing (a stopped job keeps no capture) or the server is shutting down (the
        # resumed job rewrites the same keys): let the writes finish, then undo them if stopped
        with contextlib.suppress(BaseException):
            while not task.done():
                await asyncio.sleep(0.01)
        if job.stop_requested() and task.done() and not task.cancelled() and task.exception() is None:
            for uri in task.result():
                delete_output(job.blobs, uri)
        raise
    except CaptureError as exc:
        job.log.write(PLATFORM, f"data capture FAILED: {exc}")
        if status == "Completed":
            return "Failed", f"ClientError: {exc}"[:1024]
        return status, reason
    except Exception as exc:  # a bug here must not leave the job InProgress
        log.exception("data capture of transform job %s failed", job.name)
        if status == "Completed":
            return "Failed", f"InternalServerError: data capture: {type(exc).__name__}: {exc}"[:1024]
        return status, reason
    if written:
        job.log.write(PLATFORM, "data captured: " + ", ".join(written))
    return status, reason
