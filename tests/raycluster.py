"""A real, tiny local Ray cluster for tests: a head node plus one worker node (``ray start --address``),
bounded in CPUs and object store, dashboard off, in a private temp dir on free ports.

It is stopped by PID: every process of this cluster names the private temp dir on its command line,
so other Ray clusters on the machine are left alone (``ray stop`` would stop them all).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.helpers import free_ports

OBJECT_STORE = 200 * 1024 * 1024
# Ray's memory monitor kills workers when the *machine* is nearly full; the machine is shared.
RAY_ENV = {"RAY_memory_monitor_refresh_ms": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class RayCluster:
    address: str  # host:port of the GCS, what RAY_ADDRESS / ray.init(address=...) take
    temp_dir: Path
    env: dict[str, str]

    def processes(self) -> list[psutil.Process]:
        mine = []
        marker = str(self.temp_dir)
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(marker in part for part in proc.info["cmdline"] or ()):
                    mine.append(proc)
        return mine

    def add_node(self, num_cpus: int = 1) -> None:
        _ray_start(self.temp_dir, self.env, ["--address", self.address, f"--num-cpus={num_cpus}"])

    def wait_nodes(self, count: int, timeout: float = 60) -> None:
        """Until ``count`` nodes are alive."""
        deadline = time.monotonic() + timeout
        while len(_alive_nodes(self)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} Ray nodes did not join")
            time.sleep(0.5)

    def stop(self) -> None:
        procs = self.processes()
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _ray_exe() -> str:
    exe = shutil.which("ray", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("ray is not installed (pip install 'modelhost[ray]'; it is in the test extra)")
    return exe


_NODE_PORTS = (
    "--node-manager-port",
    "--object-manager-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
)


def _ray_start(temp_dir: Path, env: dict[str, str], args: list[str], head_port: int | None = None) -> None:
    """``ray start`` on distinct free ports; a clash with a port taken meanwhile is retried once.

    ``head_port`` (the GCS port of a head node) is kept out of the node's other ports."""
    for attempt in range(2):
        ports = [p for p in free_ports(len(_NODE_PORTS) + 3) if p != head_port][: len(_NODE_PORTS) + 2]
        extra = list(args)
        if head_port is not None:
            # the head's own dashboard and client ports come from the same distinct set
            extra += [f"--dashboard-port={ports[-2]}", f"--ray-client-server-port={ports[-1]}"]
        cmd = [
            _ray_exe(),
            "start",
            *extra,
            "--node-ip-address=127.0.0.1",
            f"--object-store-memory={OBJECT_STORE}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            *(f"{flag}={port}" for flag, port in zip(_NODE_PORTS, ports, strict=False)),
        ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if not done.returncode:
            return
        if attempt == 0 and "port" in (done.stdout + done.stderr).lower():
            continue
        raise RuntimeError(f"ray start failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@contextlib.contextmanager
def ray_cluster(head_cpus: int = 2, worker_cpus: int = 1) -> Iterator[RayCluster]:
    """The head on 127.0.0.1 with ``head_cpus`` CPUs, plus a worker node with ``worker_cpus``."""
    temp_dir = Path(tempfile.mkdtemp(prefix="mhray-"))
    env = {**os.environ, **RAY_ENV}
    env.pop("RAY_ADDRESS", None)
    (port,) = free_ports(1)
    cluster = RayCluster(f"127.0.0.1:{port}", temp_dir, {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"})
    try:
        _ray_start(
            temp_dir,
            env,
            [
                "--head",
                f"--port={port}",
                f"--num-cpus={head_cpus}",
                "--include-dashboard=false",
            ],
            head_port=port,
        )
        if worker_cpus:
            cluster.add_node(worker_cpus)
        deadline = time.monotonic() + 60
        while len(_alive_nodes(cluster)) < (2 if worker_cpus else 1):
            if time.monotonic() > deadline:
                raise RuntimeError("the Ray worker node did not join")
            time.sleep(0.5)
        yield cluster
    finally:
        cluster.stop()


def _alive_nodes(cluster: RayCluster) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", "import ray; ray.init(); print(sum(n['Alive'] for n in ray.nodes()))"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    count = int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else 0
    return ["node"] * count
