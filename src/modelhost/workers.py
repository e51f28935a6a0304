"""``modelhost serve --workers N``: N front-door processes on one port, fed by one control loop.

The parent binds nothing and serves nothing: it forks N workers and keeps them running (a worker
that dies, kill -9 included, is started again after a short pause) and forwards SIGTERM / SIGINT.
Each worker is a whole front door on its own ``SO_REUSEPORT`` socket of the same address (the
kernel spreads new connections over them) and the same data dir and database; the first to take
the lease (controllers/leadership.py) runs the control loop and its fleets, the others route to its
instances (controllers/front_doors.py). If the leading worker dies its instances exit with it and
another worker takes over, restoring every endpoint as a restarted server does.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

log = logging.getLogger("modelhost.workers")

RESTART_PAUSE = 1.0  # seconds before a dead worker is started again
EARLY_EXIT = 5.0  # a worker that dies this soon after its start, three times running, stops the server


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other processes of this user may bind too (one per worker)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def exit_with_parent() -> None:
    """A worker whose parent is gone (kill -9) exits too: no orphaned front doors hold the port."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _run_worker(run: Callable[[], None], index: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handlers are not the worker's (uvicorn sets its own)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.environ["MODELHOST_WORKER_INDEX"] = str(index)
    exit_with_parent()
    run()


class Workers:
    def __init__(self, count: int, run: Callable[[], None]) -> None:
        self.count = count
        self.run = run
        self.procs: dict[int, BaseProcess] = {}
        self.started: dict[int, float] = {}
        self.early: dict[int, int] = {}
        self.stopping = False
        self._ctx = multiprocessing.get_context("fork")  # the workers start from this process's imports

    def _start(self, index: int) -> None:
        proc = self._ctx.Process(target=_run_worker, args=(self.run, index), name=f"modelhost-worker-{index}")
        proc.start()
        self.procs[index] = proc
        self.started[index] = time.monotonic()
        print(f"modelhost: worker {index} started (pid {proc.pid})", file=sys.stderr, flush=True)

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        for proc in self.procs.values():
            if proc.pid is not None and proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)

    def serve(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for index in range(self.count):
            self._start(index)
        while not self.stopping:
            time.sleep(0.2)
            for index, proc in list(self.procs.items()):
                if proc.is_alive() or self.stopping:
                    continue
                code = proc.exitcode
                proc.join()
                lived = time.monotonic() - self.started[index]
                self.early[index] = self.early.get(index, 0) + 1 if lived < EARLY_EXIT else 0
                if self.early[index] >= 3:
                    print(f"modelhost: worker {index} keeps exiting (code {code}); stopping", file=sys.stderr)
                    self._stop(signal.SIGTERM, None)
                    break
                print(f"modelhost: worker {index} exited with {code}; restarting it", file=sys.stderr, flush=True)
                time.sleep(RESTART_PAUSE)
                if not self.stopping:
                    self._start(index)
        for proc in self.procs.values():
            proc.join(60)
            if proc.is_alive():
                proc.kill()
                proc.join()
        return 0 if not any(self.early.get(i, 0) >= 3 for i in self.procs) else 1
