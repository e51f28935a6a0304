"""The template process of fast cold starts: a fork server that has already imported Python, numpy,
one runtime's framework (scikit-learn, spaCy, torch + transformers, ...) and modelhost's serving code,
so an instance forked from it pays only for loading its model.

    python -m modelhost.backends.local.forkserver --socket PATH --runtime sklearn

Protocol (one connection per instance, on a unix socket only the server's user can reach): the server
sends a 4-byte length and a JSON request ``{"module", "argv", "env", "cwd"}`` with the write end of a
pipe attached (SCM_RIGHTS) for the instance's stdout/stderr. The template forks; the child starts a
session of its own (so the server can signal its process group), takes that pipe, the request's
environment and working directory, and runs ``module.main(argv)``. The template answers
``{"pid": N}`` and, when it has reaped the child, ``{"exit": code}`` (negative: killed by a signal).
It is single-threaded (forking a threaded process is unsafe) and exits when the server is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import traceback

PRELOAD_COMMON = ("numpy", "uvicorn", "uvloop", "httptools", "modelhost.serving.worker", "modelhost.serving.handler")
# Besides the runtime's own module (which imports its framework): what its model loading imports lazily.
PRELOAD_EXTRA: dict[str, tuple[str, ...]] = {
    "sklearn": ("sklearn", "joblib", "scipy"),
    "huggingface": ("torch", "transformers", "sentence_transformers"),
    "pytorch": ("torch",),
    "spacy": ("spacy",),
    "lambda": ("boto3", "botocore"),
}
MAX_REQUEST = 4 * 1024 * 1024


def preload(runtime: str) -> None:
    for module in PRELOAD_COMMON + PRELOAD_EXTRA.get(runtime, ()):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    from modelhost.serving.runtimes import RUNTIME_MODULES

    if runtime in RUNTIME_MODULES:
        importlib.import_module(RUNTIME_MODULES[runtime])
    if runtime == "lambda":
        importlib.import_module("modelhost.serving.lambda_runtime")


def _recv_request(conn: socket.socket) -> tuple[dict, int]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 1)
    if not fds or len(data) < 4:
        raise ValueError("request without its output pipe")
    size = int.from_bytes(data[:4], "big")
    if size > MAX_REQUEST:
        raise ValueError("request too large")
    body = data[4:]
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("request cut short")
        body += chunk
    return json.loads(body), fds[0]


def _child(request: dict, out_fd: int, keep_closed: list[socket.socket]) -> None:
    """In the forked child: become the instance. Never returns."""
    code = 1
    try:
        for s in keep_closed:
            s.close()
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        os.close(devnull)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        if request.get("cwd"):
            os.chdir(request["cwd"])
        sys.argv = [request["module"], *request["argv"]]
        main = importlib.import_module(request["module"]).main
        result = main(request["argv"])
        code = int(result or 0)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _send(conn: socket.socket, message: dict) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(message).encode() + b"\n")


def serve(path: str, runtime: str) -> None:
    preload(runtime)
    parent = os.getppid()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    server.bind(path)
    os.umask(old)
    server.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    print(f"modelhost template ready: runtime {runtime}, pid {os.getpid()}", flush=True)
    while True:
        for _key, _events in selector.select(timeout=0.1):
            conn, _ = server.accept()
            try:
                conn.settimeout(10)
                request, out_fd = _recv_request(conn)
            except (OSError, ValueError) as exc:
                _send(conn, {"error": str(exc)})
                conn.close()
                continue
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(request, out_fd, [server, conn, *children.values()])
            os.close(out_fd)
            children[pid] = conn
            _send(conn, {"pid": pid})
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            done = children.pop(pid, None)
            if done is not None:
                _send(done, {"exit": os.waitstatus_to_exitcode(status)})
                done.close()
        if os.getppid() != parent:  # the server is gone; the instances notice we are gone and exit
            os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelhost.backends.local.forkserver")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--runtime", required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    serve(args.socket, args.runtime)
    return 0


if __name__ == "__main__":
    sys.exit(main())
