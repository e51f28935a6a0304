"""The server side of the fork-server templates (forkserver.py): one template process per runtime,
started when a serverless fleet of that runtime is made, and instances forked from it.

An instance forked from a template is not the server's child: ``ForkedProcess`` gives the same face
as ``asyncio.subprocess.Process`` (pid, returncode, wait(), stdout) from the template's messages and
the instance's output pipe. A model whose environment changes what is read at import time (thread
counts, Hugging Face cache settings, PYTHONPATH) is started the ordinary way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Protocol

log = logging.getLogger("modelhost.templates")

START_TIMEOUT = 180.0
IMPORT_TIME_PREFIXES = (
    "PYTHON",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "TORCH",
    "PYTORCH_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "HF_HOME",
    "HF_HUB_",
    "LD_",
)


class Process(Protocol):
    """What an instance needs of its process (asyncio's Process, or a ForkedProcess)."""

    pid: int
    stdout: asyncio.StreamReader | None

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class TemplateFailed(Exception):
    pass


class _ClosedAtEof(asyncio.StreamReaderProtocol):
    """The instance's output pipe: its transport closes (and closes the descriptor, once) at EOF;
    uvloop would otherwise keep it half-open for as long as the loop runs."""

    def eof_received(self) -> bool:
        super().eof_received()
        return False


class ForkedProcess:
    def __init__(
        self,
        pid: int,
        stdout: asyncio.StreamReader,
        exits: asyncio.StreamReader,
        conn: tuple[socket.socket, asyncio.StreamWriter],
    ) -> None:
        self.pid = pid
        self.pipe: object = None
        self._conn = conn  # referenced while the transport uses its descriptor (uvloop does not dup it)
        self.stdout: asyncio.StreamReader | None = stdout
        self._code: int | None = None
        self._done = asyncio.get_running_loop().create_task(self._await_exit(exits))

    @property
    def returncode(self) -> int | None:
        return self._code

    async def _await_exit(self, exits: asyncio.StreamReader) -> None:
        line = await exits.readline()
        try:
            self._code = int(json.loads(line)["exit"])
        except (ValueError, KeyError, TypeError):
            # The template went away: the instance follows it (it exits with its parent); make sure.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self._code = -int(signal.SIGKILL)
        finally:
            self._conn[1].close()

    async def wait(self) -> int:
        await asyncio.shield(self._done)
        assert self._code is not None
        return self._code


class Template:
    def __init__(self, runtime: str, python: str, socket_path: Path, env: dict[str, str]) -> None:
        self.runtime = runtime
        self.python = python
        self.socket_path = socket_path
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Task[None] | None = None

    def suits(self, env: dict[str, str]) -> bool:
        """Whether an instance with this environment may be forked from the template."""
        keys = {k for k in (*env, *self.env) if k.startswith(IMPORT_TIME_PREFIXES)}
        return all(env.get(k) == self.env.get(k) for k in keys)

    async def ready(self) -> None:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._ready)

    async def _start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.python,
            "-m",
            "modelhost.backends.local.forkserver",
            "--socket",
            str(self.socket_path),
            "--runtime",
            self.runtime,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        try:
            while True:
                line = await asyncio.wait_for(self.proc.stdout.readline(), START_TIMEOUT)
                if not line:
                    raise TemplateFailed(f"the {self.runtime} template exited with code {await self.proc.wait()}")
                if line.startswith(b"modelhost template ready"):
                    break
                log.info("template %s: %s", self.runtime, line.decode("utf-8", "replace").rstrip())
        except BaseException:
            self._kill()
            raise
        asyncio.get_running_loop().create_task(self._drain(self.proc.stdout))

    async def _drain(self, out: asyncio.StreamReader) -> None:
        while line := await out.readline():
            log.info("template %s: %s", self.runtime, line.decode("utf-8", "replace").rstrip())
        self._ready = None  # it died: the next spawn starts it again

    async def spawn(self, module: str, argv: list[str], env: dict[str, str], cwd: str | None) -> ForkedProcess:
        await self.ready()
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(10)
            sock.connect(str(self.socket_path))
            payload = json.dumps({"module": module, "argv": argv, "env": env, "cwd": cwd}).encode()
            msg = len(payload).to_bytes(4, "big") + payload
            socket.send_fds(sock, [msg[:65536]], [write_fd])
            if len(msg) > 65536:
                sock.sendall(msg[65536:])
        except OSError as exc:
            sock.close()
            os.close(read_fd)
            raise TemplateFailed(f"the {self.runtime} template cannot be reached: {exc}") from None
        finally:
            os.close(write_fd)
        sock.setblocking(False)
        exits, writer = await asyncio.open_unix_connection(sock=sock)
        first = await exits.readline()
        reply = json.loads(first) if first else {"error": "no answer"}
        if "pid" not in reply:
            os.close(read_fd)
            writer.close()
            raise TemplateFailed(f"the {self.runtime} template could not fork: {reply.get('error')}")
        stdout = asyncio.StreamReader(limit=1 << 20)
        # uvloop closes the descriptor itself, then closes the file object too: owning it there, that second
        # close could hit the same number just handed to another thread's open() (EBADF there, seen under
        # load). The default loop closes it only through the file object.
        pipe = os.fdopen(read_fd, "rb", 0, closefd=not type(loop).__module__.startswith("uvloop"))
        await loop.connect_read_pipe(lambda: _ClosedAtEof(stdout), pipe)
        forked = ForkedProcess(int(reply["pid"]), stdout, exits, (sock, writer))
        forked.pipe = pipe  # referenced as long as the process (uvloop does not keep it)
        return forked

    def _kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        self._kill()
        if self.proc is not None:
            await self.proc.wait()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()


class Templates:
    """One template per runtime, made on first use; ``env`` is the environment they start with
    (the server's, less model-scoped settings, plus the platform's instance settings)."""

    def __init__(self, run_dir: Path, python: str) -> None:
        self.run_dir = run_dir
        self.python = python
        self.by_runtime: dict[str, Template] = {}

    def for_runtime(self, runtime: str, env: dict[str, str]) -> Template:
        template = self.by_runtime.get(runtime)
        if template is None:
            path = self.run_dir / f"template-{runtime}.sock"
            template = self.by_runtime[runtime] = Template(runtime, self.python, path, env)
        return template

    async def close(self) -> None:
        await asyncio.gather(*(t.close() for t in self.by_runtime.values()), return_exceptions=True)
