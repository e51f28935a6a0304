"""Workload A of issue 15 (the real-time hop): scikit-learn LinearRegression(load_diabetes), one CSV
row, one instance, with `wrk` as the load generator.

Rows: the in-process limit, bare Starlette serving the model inline (one uvicorn process), and
modelhost (front door + one instance), at c=1 (p50) and c=16 (req/s), plus the server's CPU per
request at c=16 (CPU time of the server and all its descendant processes / requests answered), and
that CPU split into the front process and the instance at c=1 and at c=16 (at c=1 every request
finds both processes asleep: the wake-ups, and the interpreter's work on cold caches, cost more there).
Placement: every server process on CPU 0 (taskset, inherited by the instances it starts), wrk
(one thread) on CPU 1. Each phase runs ``--rounds`` times, targets interleaved; the table shows
min-max over the rounds, the JSON every figure, with the load average before each round.

    apt-get install -y wrk          # the load generator (Debian package)
    .venv/bin/python bench/hop.py [--seconds 5] [--rounds 2] [--src OTHER/src ...] [--out FILE]

``--src`` adds a modelhost server from another checkout's src/, measured in the same rounds (before
and after in one sitting), e.g. ``git -C . archive <commit> src | tar -x -C /tmp/before`` then
``--src /tmp/before/src``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import joblib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import SKLEARN_IMAGE, Server, csv_row, deploy, diabetes, free_port, sklearn_model  # noqa: E402

from bench.realtime import in_process, pin_process, wait_http  # noqa: E402

SERVER_CPU = {0}
LOAD_CPU = "1"

# wrk: POST the row; report requests, errors and latency percentiles (microseconds) as one JSON line.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/csv"
wrk.headers["Accept"] = "application/json"
wrk.body = os.getenv("HOP_BODY")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('HOPJSON {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d,'
    .. ' "p50_us": %f, "p99_us": %f}\\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the front door, its instances, templates)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of live processes (children's time counted where they still run)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def wrk(url: str, body: str, script: Path, connections: int, seconds: float) -> dict:
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url]
    out = subprocess.run(cmd, env={**os.environ, "HOP_BODY": body}, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stdout}{out.stderr}")
    line = next(line for line in out.stdout.splitlines() if line.startswith("HOPJSON "))
    r = json.loads(line.removeprefix("HOPJSON "))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["p50_ms"], r["p99_ms"] = r["p50_us"] / 1e3, r["p99_us"] / 1e3
    return r


def measure(url: str, root_pid: int, body: str, script: Path, seconds: float) -> dict:
    """c=1 (p50), then c=16 (req/s and the server's CPU per request). CPU per request is also split
    into the root process (the front door; bare Starlette's only one) and the rest (the instance)."""
    wrk(url, body, script, 16, 1.0)  # warm-up: connections, caches
    pids = descendants(root_pid)
    rest = [p for p in pids if p != root_pid]
    out: dict = {"processes": len(pids)}
    for c in (1, 16):
        front0, rest0 = cpu_seconds([root_pid]), cpu_seconds(rest)
        run = out[f"c{c}"] = wrk(url, body, script, c, seconds)
        n = max(run["requests"], 1)
        out[f"front_cpu_ms_c{c}"] = (cpu_seconds([root_pid]) - front0) * 1e3 / n
        out[f"rest_cpu_ms_c{c}"] = (cpu_seconds(rest) - rest0) * 1e3 / n
    out["cpu_ms_per_request_c16"] = out["front_cpu_ms_c16"] + out["rest_cpu_ms_c16"]
    return out


def span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}}–{hi:{fmt}}"


def source_env(src: Path | None) -> tuple[dict[str, str], str]:
    """(the server's environment, where its modelhost comes from) for a src/ directory (None: this one)."""
    env: dict[str, str] = {}
    if src is not None:
        src = src.resolve()
        if not (src / "modelhost" / "__init__.py").exists():
            raise SystemExit(f"{src} has no modelhost package")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
    where = subprocess.run(
        [sys.executable, "-c", "import modelhost; print(modelhost.__file__)"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return env, where.removesuffix("/__init__.py").removesuffix("/modelhost")


def start_modelhost(data_dir: Path, env: dict[str, str], tarball: bytes) -> Server:
    """A modelhost server with the endpoint "bench" (one instance), every process of it on CPU 0."""
    server = Server(data_dir, env=env)
    server.start()
    assert server.proc is not None
    pin_process(server.proc.pid, SERVER_CPU)  # its instances start later and inherit CPU 0
    server.put_object("s3://bench/model.tar.gz", tarball)
    sm, _ = server.clients()
    desc = deploy(sm, "bench", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://bench/model.tar.gz"})
    assert desc["EndpointStatus"] == "InService", desc
    for pid in descendants(server.proc.pid):
        pin_process(pid, SERVER_CPU)  # a fork server started before the pinning, too
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each load phase")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of every phase, targets interleaved")
    ap.add_argument(
        "--src",
        type=Path,
        action="append",
        default=[],
        help="also run a modelhost server from this src/ directory (repeatable; before/after in one sitting)",
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also run bench/relay_floor.py: the least a front-door + instance pair can cost (no modelhost code)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hop.json")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        ap.error("wrk is not installed (Debian: apt-get install -y wrk)")
    sources = [source_env(src) for src in [*args.src, None]]
    for _, where in sources:
        print(f"modelhost server from {where}")

    tarball, model = sklearn_model()
    x, _ = diabetes()
    row = csv_row(x[0])
    pin_process(os.getpid(), SERVER_CPU)
    limit = in_process(model, row, 2.0)
    pin_process(os.getpid(), {int(LOAD_CPU)})

    rounds: list[dict] = []
    names = (
        ["bare Starlette"]
        + (["two-process floor"] if args.floor else [])
        + [f"modelhost {where}" for _, where in sources]
    )
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        model_path = Path(tmp) / "model.joblib"
        joblib.dump(model, model_path)
        port = free_port()
        bare = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, str(ROOT / "bench" / "bare_app.py"), str(model_path), str(port)]
        )
        servers: list[Server] = []
        floor: subprocess.Popen | None = None
        try:
            bare_url = f"http://127.0.0.1:{port}/invocations"
            wait_http(bare_url, timeout=120)
            targets = [(names[0], bare_url, bare.pid)]
            if args.floor:
                floor_port = free_port()
                floor = subprocess.Popen(
                    ["taskset", "-c", "0", sys.executable, str(ROOT / "bench" / "relay_floor.py"), str(model_path)]
                    + [str(floor_port)]
                )
                floor_url = f"http://127.0.0.1:{floor_port}/invocations"
                wait_http(floor_url, timeout=120)
                targets.append(("two-process floor", floor_url, floor.pid))
            for i, (env, _) in enumerate(sources):
                server = start_modelhost(Path(tmp) / f"data-{i}", env, tarball)
                servers.append(server)
                assert server.proc is not None
                targets.append(
                    (names[i + 1 + args.floor], f"{server.url}/endpoints/bench/invocations", server.proc.pid)
                )
            for i in range(args.rounds):
                measured: dict = {"round": i + 1, "targets": {}}
                for name, url, pid in targets:
                    measured["targets"][name] = {
                        "load_average": os.getloadavg(),
                        **measure(url, pid, row, script, args.seconds),
                    }
                rounds.append(measured)
        finally:
            for server in servers:
                server.stop()
            if floor is not None:
                floor.terminate()
                floor.wait(10)
            bare.terminate()
            bare.wait(10)

    def col(target: str, key: str) -> list[float]:
        out = []
        for r in rounds:
            m = r["targets"][target]
            out.append(m["c1"]["p50_ms"] if key == "p50" else m["c16"]["rps"] if key == "rps" else m[key])
        return out

    print(
        f"\nworkload A: LinearRegression(load_diabetes), 1 CSV row, 1 instance; wrk -t1 on CPU 1, "
        f"every server process on CPU 0; {args.rounds} rounds x {args.seconds:g} s, targets interleaved"
    )
    width = 24
    print(f"{'':<30}{'in-process limit':>{width}}" + "".join(f"{n[-width + 1 :]:>{width}}" for n in names))
    rows = [
        ("c=1 p50 ms", f"{limit['p50_ms']:.3f}", "p50", ".3f"),
        ("c=16 req/s", f"{limit['rps']:.0f}", "rps", ".0f"),
        ("server CPU ms/request, c=16", "—", "cpu_ms_per_request_c16", ".3f"),
        ("  front process, c=1", "—", "front_cpu_ms_c1", ".3f"),
        ("  front process, c=16", "—", "front_cpu_ms_c16", ".3f"),
        ("  instance, c=1", "—", "rest_cpu_ms_c1", ".3f"),
        ("  instance, c=16", "—", "rest_cpu_ms_c16", ".3f"),
    ]
    for label, first, key, fmt in rows:
        print(f"{label:<30}{first:>{width}}" + "".join(f"{span(col(n, key), fmt):>{width}}" for n in names))
    print(
        f"{'load average (1 min)':<30}{'':>{width}}"
        + "".join(f"{span([r['targets'][n]['load_average'][0] for r in rounds], '.2f'):>{width}}" for n in names)
    )
    ratios: dict[str, dict[str, list[float]]] = {}
    for n in names[1:]:
        ratio = [r["targets"][n]["c16"]["rps"] / r["targets"][names[0]]["c16"]["rps"] for r in rounds]
        extra = [r["targets"][n]["c1"]["p50_ms"] - r["targets"][names[0]]["c1"]["p50_ms"] for r in rounds]
        ratios[n] = {"throughput_ratio_c16": ratio, "p50_extra_ms_c1": extra}
        print(
            f"{n}: c=16 throughput / bare {span(ratio, '.2f')} (goal >= 0.8); "
            f"c=1 p50 - bare {span(extra, '.3f')} ms (goal <= 0.15)"
        )
    errors = sum(
        m[c]["non2xx"] + m[c]["socket_errors"] for r in rounds for m in r["targets"].values() for c in ("c1", "c16")
    )
    print(f"errors (non-2xx + socket): {errors}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "placement": "servers (and their instances) on CPU 0, wrk -t1 on CPU 1",
                "seconds": args.seconds,
                "in_process": limit,
                "rounds": rounds,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
