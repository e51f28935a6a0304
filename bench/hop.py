"""Workload A of issue 15 (the real-time hop): scikit-learn LinearRegression(load_diabetes), one CSV
row, one instance, with `wrk` as the load generator.

Rows: the in-process limit, bare Starlette serving the model inline (one uvicorn process), and
modelhost (front door + one instance), at c=1 (p50) and c=16 (req/s), plus the server's CPU per
request at c=16 (CPU time of the server and all its descendant processes / requests answered).
Placement: every server process on CPU 0 (taskset, inherited by the instances it starts), wrk
(one thread) on CPU 1. Each phase runs ``--rounds`` times, targets interleaved; the table shows
min-max over the rounds, the JSON every figure, with the load average before each round.

    apt-get install -y wrk          # the load generator (Debian package)
    .venv/bin/python bench/hop.py [--seconds 5] [--rounds 2] [--src OTHER/src] [--out FILE]

``--src`` runs the modelhost server from another checkout's src/ (before/after in one sitting).
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
import time
from pathlib import Path

import joblib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.realtime import in_process, pin_process, wait_http  # noqa: E402
from tests.helpers import SKLEARN_IMAGE, Server, csv_row, deploy, diabetes, free_port, sklearn_model  # noqa: E402

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
    """c=1 (p50), then c=16 (req/s and the server's CPU per request)."""
    wrk(url, body, script, 16, 1.0)  # warm-up: connections, caches
    c1 = wrk(url, body, script, 1, seconds)
    pids = descendants(root_pid)
    cpu0 = cpu_seconds(pids)
    c16 = wrk(url, body, script, 16, seconds)
    cpu = cpu_seconds(pids) - cpu0
    return {
        "c1": c1,
        "c16": c16,
        "cpu_ms_per_request_c16": cpu * 1e3 / max(c16["requests"], 1),
        "processes": len(pids),
    }


def span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}}–{hi:{fmt}}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each load phase")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of every phase, targets interleaved")
    ap.add_argument("--src", type=Path, default=None, help="run the modelhost server from this src/ directory")
    ap.add_argument("--label", default=None, help="name of the modelhost row (default: its source)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hop.json")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        ap.error("wrk is not installed (Debian: apt-get install -y wrk)")
    server_env: dict[str, str] = {}
    if args.src is not None:
        src = args.src.resolve()
        if not (src / "modelhost" / "__init__.py").exists():
            ap.error(f"{src} has no modelhost package")
        server_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
    where = subprocess.run(
        [sys.executable, "-c", "import modelhost; print(modelhost.__file__)"],
        env={**os.environ, **server_env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    label = args.label or f"modelhost ({where.removesuffix('/modelhost/__init__.py')})"
    print(f"modelhost server from {where}")

    tarball, model = sklearn_model()
    x, _ = diabetes()
    row = csv_row(x[0])
    pin_process(os.getpid(), SERVER_CPU)
    limit = in_process(model, row, 2.0)
    pin_process(os.getpid(), {int(LOAD_CPU)})

    rounds: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        model_path = Path(tmp) / "model.joblib"
        joblib.dump(model, model_path)
        port = free_port()
        bare = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, str(ROOT / "bench" / "bare_app.py"), str(model_path), str(port)]
        )
        server = Server(Path(tmp) / "data", env=server_env)
        try:
            bare_url = f"http://127.0.0.1:{port}/invocations"
            wait_http(bare_url, timeout=120)
            server.start()
            assert server.proc is not None
            pin_process(server.proc.pid, SERVER_CPU)  # its instances start later and inherit CPU 0
            server.put_object("s3://bench/model.tar.gz", tarball)
            sm, _ = server.clients()
            desc = deploy(sm, "bench", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://bench/model.tar.gz"})
            assert desc["EndpointStatus"] == "InService", desc
            for pid in descendants(server.proc.pid):
                pin_process(pid, SERVER_CPU)  # the fork server and templates started before pinning too
            mh_url = f"{server.url}/endpoints/bench/invocations"
            for i in range(args.rounds):
                load_avg = os.getloadavg()
                rounds.append(
                    {
                        "round": i + 1,
                        "load_average": load_avg,
                        "bare": measure(bare_url, bare.pid, row, script, args.seconds),
                        "modelhost": measure(mh_url, server.proc.pid, row, script, args.seconds),
                    }
                )
        finally:
            server.stop()
            bare.terminate()
            bare.wait(10)

    def col(target: str, key: str) -> list[float]:
        out = []
        for r in rounds:
            m = r[target]
            out.append(m["c1"]["p50_ms"] if key == "p50" else m["c16"]["rps"] if key == "rps" else m[key])
        return out

    ratio = [r["modelhost"]["c16"]["rps"] / r["bare"]["c16"]["rps"] for r in rounds]
    extra = [r["modelhost"]["c1"]["p50_ms"] - r["bare"]["c1"]["p50_ms"] for r in rounds]
    errors = sum(r[t][c]["non2xx"] + r[t][c]["socket_errors"] for r in rounds for t in ("bare", "modelhost") for c in ("c1", "c16"))
    print(
        f"\nworkload A: LinearRegression(load_diabetes), 1 CSV row, 1 instance; wrk -t1 on CPU 1, servers on CPU 0; "
        f"{args.rounds} rounds x {args.seconds:g} s; load average before each round: "
        + ", ".join("/".join(f"{v:.2f}" for v in r["load_average"]) for r in rounds)
    )
    print(f"{'':<34}{'in-process limit':>18}{'bare Starlette':>18}{label[:40]:>42}")
    print(f"{'c=1 p50 ms':<34}{limit['p50_ms']:>18.3f}{span(col('bare', 'p50'), '.3f'):>18}{span(col('modelhost', 'p50'), '.3f'):>42}")
    print(f"{'c=16 req/s':<34}{limit['rps']:>18.0f}{span(col('bare', 'rps'), '.0f'):>18}{span(col('modelhost', 'rps'), '.0f'):>42}")
    cpu_key = "cpu_ms_per_request_c16"
    print(f"{'server CPU ms/request, c=16':<34}{'—':>18}{span(col('bare', cpu_key), '.3f'):>18}{span(col('modelhost', cpu_key), '.3f'):>42}")
    print(f"\nc=16 throughput modelhost / bare: {span(ratio, '.2f')} (goal >= 0.8)")
    print(f"c=1 p50 modelhost - bare: {span(extra, '.3f')} ms (goal <= 0.15)")
    print(f"errors (non-2xx + socket): {errors}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "placement": "servers (and their instances) on CPU 0, wrk -t1 on CPU 1",
                "seconds": args.seconds,
                "server_source": where,
                "label": label,
                "in_process": limit,
                "rounds": rounds,
                "throughput_ratio_c16": ratio,
                "p50_extra_ms_c1": extra,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
