"""``serve --workers N`` benchmark (issue 15 part 2): the scikit-learn endpoint (LinearRegression on
load_diabetes, one CSV row) at concurrency 16 through ``modelhost serve --workers 2`` and
``--workers 1``, against bare Starlette with 2 uvicorn workers (bench/bare_app.py, the model inline),
all measured in the same run, each twice (interleaved). Unpinned: the servers and the load generator
(``wrk``, one thread) share both cores as the kernel places them; the load average is recorded
next to every figure. Prints a table; writes JSON.

    .venv/bin/python bench/workers.py [--seconds 10] [--runs 2] [--out bench/results/workers.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import joblib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import SKLEARN_IMAGE, Server, csv_row, deploy, diabetes, free_port, sklearn_model  # noqa: E402

from bench.realtime import wait_http  # noqa: E402

CONCURRENCY = 16
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk(url: str, body: str, seconds: float, script_dir: Path) -> dict:
    script = script_dir / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = "{body}"\n'
        'wrk.headers["Content-Type"] = "text/csv"\nwrk.headers["Accept"] = "application/json"\n'
    )
    subprocess.run(["wrk", "-t1", "-c16", "-d1s", "-s", str(script), url], capture_output=True, check=True)  # warm-up
    load_before = os.getloadavg()[0]
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONCURRENCY}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {q: float(v) * UNITS[u] for q, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": latency.get("50"),
        "p99_ms": latency.get("99"),
        "errors": int(errors.group(1)) if errors else 0,
        "load_avg_1m_before": load_before,
        "load_avg_1m_after": os.getloadavg()[0],
    }


def modelhost_server(tmp: Path, workers: int, tarball: bytes) -> Server:
    server = Server(tmp / f"data-w{workers}", env={"MODELHOST_WORKERS": str(workers)}).start()
    server.put_object("s3://bench/model.tar.gz", tarball)
    sm, _ = server.clients()
    desc = deploy(sm, "bench", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://bench/model.tar.gz"})
    assert desc["EndpointStatus"] == "InService", desc
    time.sleep(2)  # every worker has read the leader's route
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each load phase")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "workers.json")
    args = ap.parse_args()
    tarball, model = sklearn_model()
    x, _ = diabetes()
    row = csv_row(x[0])
    results: dict[str, list[dict]] = {
        "bare_starlette_2_workers": [],
        "modelhost_workers_1": [],
        "modelhost_workers_2": [],
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_path = tmp / "model.joblib"
        joblib.dump(model, model_path)
        port = free_port()
        bare = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "bench.bare_app:create", "--workers", "2",
             "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
             "--log-level", "warning", "--no-access-log"],
            cwd=ROOT,
            env={**os.environ, "MODELHOST_BENCH_MODEL": str(model_path), "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        servers = {1: modelhost_server(tmp, 1, tarball), 2: modelhost_server(tmp, 2, tarball)}
        try:
            bare_url = f"http://127.0.0.1:{port}/invocations"
            wait_http(bare_url)
            for _ in range(args.runs):
                results["bare_starlette_2_workers"].append(wrk(bare_url, row, args.seconds, tmp))
                for n, server in servers.items():
                    url = f"{server.url}/endpoints/bench/invocations"
                    results[f"modelhost_workers_{n}"].append(wrk(url, row, args.seconds, tmp))
        finally:
            for server in servers.values():
                server.stop()
            bare.terminate()
            bare.wait(30)
    bare_rps = [r["rps"] for r in results["bare_starlette_2_workers"]]
    print(f"\nc={CONCURRENCY}, {args.seconds:g} s per phase, unpinned on {os.cpu_count()} cores, wrk -t1")
    print(f"{'server':<28} {'run':>3} {'req/s':>9} {'x bare':>7} {'p50 ms':>8} {'p99 ms':>8} {'load avg':>9}")
    for name, runs in results.items():
        for i, r in enumerate(runs):
            ratio = r["rps"] / bare_rps[i]
            r["ratio_to_bare_same_run"] = ratio
            print(
                f"{name:<28} {i + 1:>3} {r['rps']:>9.0f} {ratio:>7.2f} {r['p50_ms'] or 0:>8.2f} "
                f"{r['p99_ms'] or 0:>8.2f} {r['load_avg_1m_before']:>9.2f}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "concurrency": CONCURRENCY,
                "seconds": args.seconds,
                "placement": "unpinned: servers, their instances and wrk on all cores",
                "cpus": os.cpu_count(),
                "machine": platform.platform(),
                "results": results,
            },
            indent=2,
        )
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
