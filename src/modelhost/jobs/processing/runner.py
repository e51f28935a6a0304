"""Runs one processing job: inputs down, the image's program as a child process (its output into the
job's log), outputs up, the row finished. ``/opt/ml`` is the job's own directory
(``<data-dir>/processing/<job>/opt/ml``): LocalPaths, and every argument or environment value that
starts with ``/opt/ml/``, are rewritten to it (``MODELHOST_PROCESSING_ROOT`` names the root).
Cancelling the task kills the process group; the supervisor decides what the row becomes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelhost.backends.handle import DeploymentFailed
from modelhost.backends.local.specs import InstanceUser, instance_user
from modelhost.config import Settings
from modelhost.jobs.inputs import InputError
from modelhost.jobs.processing.images import Program, UnsupportedImage, program
from modelhost.jobs.processing.metrics import MONITORING_METRICS
from modelhost.jobs.processing.transfer import download, upload
from modelhost.store import tables
from modelhost.store.blobs import BlobStore
from modelhost.store.db import MetadataStore
from modelhost.store.logs import ProcessingLog

PLATFORM = "processing"  # log source of the runner's own lines
CONTAINER = "algo-1"
DEFAULT_MAX_RUNTIME = 86400
TAIL = 5  # lines of output quoted in a FailureReason


class JobFailed(Exception):
    """The job ends Failed with this reason."""


class ProcessingRunner:
    def __init__(self, settings: Settings, store: MetadataStore, blobs: BlobStore, row: dict[str, Any]) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.row = row
        self.name = row["name"]
        self.spec = row["spec"]
        self.root = settings.data_dir / "processing" / row["name_key"]
        self.log = ProcessingLog(settings.logs_dir, self.name)
        self.stop_requested = False
        self.tail: list[str] = []

    def set(self, **values: Any) -> None:
        values.setdefault("last_modified_time", round(time.time(), 3))
        with self.store.begin() as conn:
            self.store.update(conn, tables.processing_jobs, self.name, values)

    def _remap(self, value: str) -> str:
        return str(self.root) + value if value.startswith("/opt/ml/") else value

    def _command(self, prog: Program) -> tuple[list[str], dict[str, str]]:
        python = self.settings.python or sys.executable
        argv = [python, *(self._remap(a) for a in prog.argv[1:])]
        env = dict(os.environ)
        env.update({k: self._remap(v) for k, v in (self.spec.get("Environment") or {}).items()})
        env["MODELHOST_PROCESSING_ROOT"] = str(self.root)
        env["PYTHONUNBUFFERED"] = "1"
        return argv, env

    async def run(self) -> None:
        try:
            status, reason, message = await self._run()
        except (OSError, ValueError) as exc:  # the runner's own failure: the job fails, never hangs InProgress
            status, reason, message = "Failed", f"InternalServerError: {type(exc).__name__}: {exc}", None
        except asyncio.CancelledError:
            self.log.write(PLATFORM, "job cancelled")
            self.log.close()
            self.cleanup()
            raise
        values: dict[str, Any] = {"status": status, "end_time": round(time.time(), 3)}
        if reason:
            values["failure_reason"] = reason[:1024]
        if message:
            values["exit_message"] = message[:1024]
        await asyncio.to_thread(self.set, **values)
        self.log.write(PLATFORM, f"job {status}" + (f": {reason}" if reason else ""))
        self.log.close()
        self.cleanup()

    def cleanup(self) -> None:
        """The job's local files (its outputs are uploaded by now)."""
        shutil.rmtree(self.root, ignore_errors=True)

    async def _run(self) -> tuple[str, str | None, str | None]:
        try:
            prog = program(self.spec["AppSpecification"])
        except UnsupportedImage as exc:
            return "Failed", str(exc), None
        try:
            user = instance_user(self.settings)  # MODELHOST_INSTANCE_USER: the program runs as that user
        except DeploymentFailed as exc:
            return "Failed", f"ClientError: {exc}", None
        shutil.rmtree(self.root, ignore_errors=True)  # a resumed job starts over
        (self.root / "opt/ml/output").mkdir(parents=True, exist_ok=True)
        monitoring = self.row.get("monitoring_schedule_arn") is not None
        try:
            size = await asyncio.to_thread(
                download, self.blobs, self.root, self.spec.get("ProcessingInputs", []), monitoring
            )
            self.log.write(PLATFORM, f"downloaded {size} bytes of input")
            if user is not None:
                await asyncio.to_thread(_hand_over, self.root, user)
            code = await self._execute(prog, user)
            if code != 0:
                return "Failed", self._failure(code), self._message()
            outputs = (self.spec.get("ProcessingOutputConfig") or {}).get("Outputs", [])
            count = await asyncio.to_thread(upload, self.blobs, self.root, outputs)
            self.log.write(PLATFORM, f"uploaded {count} output files")
        except (InputError, JobFailed) as exc:
            return (
                "Failed",
                str(exc) if str(exc).startswith(("ClientError", "AlgorithmError")) else (f"ClientError: {exc}"),
                None,
            )
        self._publish_metrics()
        return "Completed", None, self._message()

    async def _execute(self, prog: Program, user: InstanceUser | None) -> int:
        argv, env = self._command(prog)
        self.log.write(PLATFORM, "running " + " ".join(argv[1:]))
        as_user: dict[str, Any] = {}
        if user is not None:
            env["HOME"] = str(user.home)
            as_user["preexec_fn"] = _become(user.uid, user.gid)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=self.root,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # the whole group is killed on stop or timeout
            **as_user,
        )
        limit = float((self.spec.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME))
        try:
            await asyncio.wait_for(self._pump(proc), limit)
            return await proc.wait()
        except TimeoutError:
            _kill(proc)
            await proc.wait()
            raise JobFailed(f"ClientError: the job ran longer than MaxRuntimeInSeconds ({limit:g} s).") from None
        except asyncio.CancelledError:
            _kill(proc)
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
            raise

    async def _pump(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.log.write(CONTAINER, line)
            self.tail = [*self.tail[-(TAIL - 1) :], line]

    def _message(self) -> str | None:
        path = self.root / "opt/ml/output/message"
        return path.read_text(errors="replace").strip() or None if path.exists() else None

    def _failure(self, code: int) -> str:
        path = self.root / "opt/ml/output/failure"
        if path.exists() and path.read_text(errors="replace").strip():
            return path.read_text(errors="replace").strip()
        tail = " | ".join(t for t in self.tail if t.strip())
        return f"AlgorithmError: the job's program exited with code {code}" + (f": {tail}" if tail else ".")

    def _publish_metrics(self) -> None:
        path = self.root / "opt/ml/output/metrics/cloudwatch/metrics.jsonl"
        if path.exists():
            with contextlib.suppress(ValueError, KeyError, OSError):
                MONITORING_METRICS.publish_file(path)


def _hand_over(root: Path, user: InstanceUser) -> None:
    """The job's directory to the instance user (its inputs readable, its outputs writable); the
    processing directory above it only traversable."""
    os.chmod(root.parent, 0o711)
    for path in [root, *root.rglob("*")]:
        os.chown(path, user.uid, user.gid, follow_symlinks=False)


def _become(uid: int, gid: int) -> Callable[[], None]:
    """In the forked child before exec: no supplementary groups, then the group, then the user."""

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return drop


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
