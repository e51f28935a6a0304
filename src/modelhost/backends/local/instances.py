"""Instance lifecycle: one OS process per instance serving the container contract on a unix
socket; spawn, health (/ping), restart after a crash, drain and stop (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelhost.backends.handle import ReplicaFailed
from modelhost.backends.local import memory
from modelhost.backends.local.http import ConnectError, ConnectionLost, RequestTimeout, UnixHttpPool
from modelhost.backends.local.templates import Process, Template, TemplateFailed
from modelhost.store.logs import EndpointLog

PING_TIMEOUT = 2.0  # seconds, as SageMaker's health check
# The server's own environment must not leak model settings into every instance (an HF_TASK exported
# in the shell would apply to all Hugging Face endpoints); those come from the model only.
MODEL_SCOPED_PREFIXES = (
    "SAGEMAKER_",
    "HF_TASK",
    "HF_MODEL_ID",
    "HF_MODEL_REVISION",
    "HF_API_TOKEN",
    "HF_TRUST_REMOTE_CODE",
)
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


InstanceFailed = ReplicaFailed  # an instance could not start; the message is meant for FailureReason


@dataclass(frozen=True)
class InstanceUser:
    """MODELHOST_INSTANCE_USER: the unprivileged user instance processes run as (the server is root)."""

    name: str
    uid: int
    gid: int
    home: Path  # owned by the user: HOME and the working directory of its instances


def _become(uid: int, gid: int) -> Callable[[], None]:
    """Run in the forked child before exec: no supplementary groups, then the group, then the user."""

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return drop


@dataclass
class InstanceSpec:
    """Everything needed to run one instance of a variant."""

    endpoint: str
    variant: str
    model_dir: Path
    runtime: str
    environment: dict[str, str]
    startup_timeout: float
    stop_grace: float = 30.0
    python: str = field(default_factory=lambda: sys.executable)
    user: InstanceUser | None = None
    # Serverless: fork from this pre-imported template when the environment allows, and stay under this memory.
    template: Template | None = None
    memory_limit_mb: int | None = None

    def instance(self, index: int, run_dir: Path, log: EndpointLog) -> Instance:
        """A new instance of this spec (pipeline and multi-model specs make their own kinds)."""
        return Instance(self, index, run_dir, log)


class Instance:
    def __init__(self, spec: InstanceSpec, index: int, run_dir: Path, log: EndpointLog) -> None:
        self.spec = spec
        self.index = index
        self.name = f"{spec.variant}/{index}"
        self.socket_path = run_dir / f"{os.getpid()}-{id(self):x}.sock"
        self.error_file = self.socket_path.with_suffix(".err")
        self.log = log
        self.proc: Process | None = None
        self.exit_reason: str | None = None  # why the platform stopped it (e.g. the memory limit)
        self.client: UnixHttpPool | None = None
        self.healthy = False
        self.outstanding = 0
        self.stopping = False
        self.restarts = 0
        self.last_output: collections.deque[str] = collections.deque(maxlen=20)
        self._pump: asyncio.Task[None] | None = None
        self._memory: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        return self.healthy and not self.stopping and self.client is not None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.error_file.unlink()
        env = {k: v for k, v in os.environ.items() if not k.startswith(MODEL_SCOPED_PREFIXES)}
        env.update(self.spec.environment)
        env.update(
            {
                "MODELHOST_RUNTIME": self.spec.runtime,
                "MODELHOST_ERROR_FILE": str(self.error_file),
                "SAGEMAKER_BIND_TO_PORT": env.get("SAGEMAKER_BIND_TO_PORT", "8080"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        as_user: dict[str, Any] = {}
        user = self.spec.user
        if user is not None:
            # The instance creates its socket and error file here; the server (root) reads them.
            run_dir = self.socket_path.parent
            os.chown(run_dir, -1, user.gid)
            os.chmod(run_dir, 0o770)
            env.update({"HOME": str(user.home), "USER": user.name, "LOGNAME": user.name})
            # subprocess's user=/group=/extra_groups=[] done in the child (uvloop accepts only preexec_fn).
            as_user = {"preexec_fn": _become(user.uid, user.gid), "cwd": str(user.home)}
        self.exit_reason = None
        argv = ["--uds", str(self.socket_path), "--model-dir", str(self.spec.model_dir)]
        forked = await self._fork(argv, env) if user is None else None
        try:
            self.proc = forked or await asyncio.create_subprocess_exec(
                self.spec.python,
                "-m",
                "modelhost.serving.worker",
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C on the server is handled by the server, not the instances
                **as_user,
            )
        except OSError as exc:
            who = f" as MODELHOST_INSTANCE_USER {user.name}" if user is not None else ""
            raise InstanceFailed(
                f"The instance process could not be started{who}: {self.spec.python}: {exc.strerror or exc}."
            ) from None
        how = f" from the {self.spec.runtime} template" if forked else ""
        self.log.write(self.name, f"instance started (pid {self.proc.pid}){how}")
        self._pump = asyncio.create_task(self._pump_output(self.proc))
        if self.spec.memory_limit_mb:
            self._memory = asyncio.create_task(
                memory.watch(self.proc.pid, self.spec.memory_limit_mb, self._stopped_because)
            )

    async def _fork(self, argv: list[str], env: dict[str, str]) -> Process | None:
        template = self.spec.template
        if template is None or not template.suits(env):
            return None
        try:
            return await template.spawn("modelhost.serving.worker", argv, env, None)
        except TemplateFailed as exc:
            self.log.write(self.name, f"{exc}; starting the instance without it")
            return None

    def _stopped_because(self, reason: str) -> None:
        self.exit_reason = reason
        self.healthy = False
        self.log.write(self.name, reason)

    async def _pump_output(self, proc: Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = line.decode("utf-8", "replace").rstrip()
            self.last_output.append(text)
            self.log.write(self.name, text)

    def _connect(self) -> None:
        if self.client is not None:
            asyncio.get_running_loop().create_task(self.client.close())
        self.client = UnixHttpPool(str(self.socket_path))

    def adopt(self, socket_path: Path) -> None:
        """Reach an instance another front door runs (a follower's view of the leader's fleet): its
        socket only, no process of ours to watch, kill or clean up."""
        self.socket_path = socket_path
        self._connect()

    async def ping(self) -> bool:
        if self.client is None:
            return False
        try:
            response = await self.client.request(b"GET", b"/ping", [], b"", PING_TIMEOUT)
        except (ConnectError, ConnectionLost, RequestTimeout):
            return False
        return response.status == 200

    def failure_reason(self) -> str:
        if self.exit_reason:
            return self.exit_reason
        try:
            reason = self.error_file.read_text().strip()
        except FileNotFoundError:
            reason = ""
        if not reason:
            tail = " | ".join(line for line in list(self.last_output)[-3:] if line)
            code = self.proc.returncode if self.proc else None
            reason = f"The instance exited with code {code} before answering /ping" + (f": {tail}" if tail else ".")
        return reason[:1000]

    async def wait_healthy(self, timeout: float) -> None:
        """Wait for the first successful /ping; raise InstanceFailed on exit or timeout."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            if self.proc.returncode is not None:
                if self._pump:
                    await self._pump
                raise InstanceFailed(self.failure_reason())
            if self.socket_path.exists():
                if self.client is None:
                    self._connect()
                if await self.ping():
                    self.healthy = True
                    self.log.write(self.name, "instance passed /ping and is in service")
                    return
            if time.monotonic() > deadline:
                raise InstanceFailed(
                    f"The primary container for production variant {self.spec.variant} did not pass the ping "
                    f"health check within {timeout:g} seconds. Please check the endpoint's logs."
                )
            await asyncio.sleep(delay)
            # A forked (serverless) instance is a request waiting on a cold start: poll it closely.
            delay = min(delay * 1.5, 0.02 if self.spec.template is not None else 0.25)

    async def start(self) -> None:
        await self.spawn()
        self._connect()
        await self.wait_healthy(self.spec.startup_timeout)

    def kill(self) -> None:
        """Hard-kill (a hung instance); the supervisor restarts it."""
        self.healthy = False
        if self.proc and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Take out of rotation, let in-flight requests finish, then SIGTERM and SIGKILL after the grace."""
        self.stopping = True
        self.healthy = False
        deadline = time.monotonic() + drain_timeout
        while self.outstanding and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        proc = self.proc
        if proc and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.spec.stop_grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self._pump:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, 2)
        if self.client is not None:
            await self.client.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.error_file.unlink()
        self.log.write(self.name, "instance stopped")
