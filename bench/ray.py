"""Ray backend benchmark (issue 16): the scikit-learn endpoint (LinearRegression on load_diabetes, one
CSV row per request) on modelhost's Ray backend vs modelhost's local backend vs Ray Serve's own HTTP
proxy serving the same model with the same runtime, all in the same run, at concurrency 1 and 16.

    .venv/bin/python bench/ray.py [--seconds 5] [--out bench/results/ray.json]

Placement: nothing is pinned; the modelhost server, its replicas, the Ray head/worker node processes
and the load generator share the machine's cores (the figures print ``os.cpu_count()`` and the load
average). Each Ray cluster is a head (2 CPUs) plus one worker node (1 CPU) in a private temp dir,
stopped by PID. Ray Serve's proxy runs on its own cluster after modelhost's (Serve's proxy settings
are per cluster), with one replica as modelhost's endpoint has.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import SKLEARN_IMAGE, Server, csv_row, deploy, diabetes, free_port, sklearn_model  # noqa: E402
from tests.raycluster import ray_cluster  # noqa: E402

from bench.realtime import load, print_table, wait_http  # noqa: E402

PROXY_APP = """
import sys
from pathlib import Path
from ray import serve
from starlette.requests import Request
from starlette.responses import Response
from modelhost.backends.ray.replica import ModelReplica

@serve.deployment(ray_actor_options={"num_cpus": 0.2, "runtime_env": {"env_vars": {"MODELHOST_RUNTIME": "sklearn"}}},
                  max_ongoing_requests=64)
class Proxied(ModelReplica):
    async def __call__(self, request: Request) -> Response:
        headers = [(k.encode(), v.encode()) for k, v in request.headers.items()]
        status, out_headers, body = await self.invoke(headers, await request.body())
        return Response(body, status, media_type=dict(out_headers)[b"content-type"].decode())

serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[2])})
serve.run(Proxied.bind(sys.argv[1], None, 120.0), name="proxied", route_prefix="/")
print("ready", flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ray.json")
    args = ap.parse_args()
    tar, _ = sklearn_model()
    x, _ = diabetes()
    body = csv_row(x[0]).encode()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mh-bench-ray-") as tmp:
        # modelhost, local backend
        local = Server(Path(tmp) / "local").start()
        try:
            local.put_object("s3://bench/model.tar.gz", tar)
            deploy(local.clients()[0], "bench", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://bench/model.tar.gz"})
            url = f"{local.url}/endpoints/bench/invocations"
            for conc in (1, 16):
                results[f"modelhost_local_c{conc}"] = asyncio.run(load(url, body, conc, args.seconds))
        finally:
            local.stop()
        # modelhost, Ray backend
        with ray_cluster() as cluster:
            env = {**cluster.env, "MODELHOST_BACKEND": "ray", "MODELHOST_RAY_CPUS_PER_VCPU": "0.1"}
            srv = Server(Path(tmp) / "ray", env={**env, "MODELHOST_RAY_MEMORY_SHARE": "0"}).start()
            try:
                srv.put_object("s3://bench/model.tar.gz", tar)
                desc = deploy(
                    srv.clients()[0], "bench", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://bench/model.tar.gz"}
                )
                assert desc["EndpointStatus"] == "InService", desc
                url = f"{srv.url}/endpoints/bench/invocations"
                for conc in (1, 16):
                    results[f"modelhost_ray_c{conc}"] = asyncio.run(load(url, body, conc, args.seconds))
                model_dir = next((Path(tmp) / "ray" / "model-cache").glob("*/model.joblib")).parent
            finally:
                srv.stop()
        # Ray Serve's own HTTP proxy, same runtime, same model files
        with ray_cluster() as cluster:
            import subprocess

            port = free_port()
            script = Path(tmp) / "proxied.py"
            script.write_text(PROXY_APP)
            driver = subprocess.Popen(
                [sys.executable, str(script), str(model_dir), str(port)],
                env={
                    **cluster.env,
                    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
                },
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            try:
                assert driver.stdout is not None
                assert "ready" in driver.stdout.readline(), "the Ray Serve app did not start"
                wait_http(f"http://127.0.0.1:{port}/-/healthz")
                url = f"http://127.0.0.1:{port}/"
                for conc in (1, 16):
                    results[f"ray_serve_proxy_c{conc}"] = asyncio.run(load(url, body, conc, args.seconds))
            finally:
                driver.terminate()
                driver.wait(30)
    print_table(results)
    summary = {
        "ray_minus_local_p50_ms_c1": results["modelhost_ray_c1"]["p50_ms"] - results["modelhost_local_c1"]["p50_ms"],
        "ray_minus_local_p50_ms_c16": results["modelhost_ray_c16"]["p50_ms"] - results["modelhost_local_c16"]["p50_ms"],
        "ray_over_proxy_rps_c1": results["modelhost_ray_c1"]["rps"] / results["ray_serve_proxy_c1"]["rps"],
        "ray_over_proxy_rps_c16": results["modelhost_ray_c16"]["rps"] / results["ray_serve_proxy_c16"]["rps"],
    }
    for k, v in summary.items():
        print(f"{k}: {v:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "results": results,
                "summary": summary,
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "loadavg": os.getloadavg(),
                "placement": "unpinned: server, replicas, Ray node processes and the load generator share all cores",
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
