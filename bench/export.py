"""serve-model benchmark: an exported model served by `modelhost serve-model` (the SageMaker container
contract, no server) against the endpoint it was exported from, measured in the same run.

A scikit-learn LinearRegression (load_diabetes) endpoint is exported with `modelhost export`; both are
invoked with one CSV row at concurrency 1 and 8 (closed loop, aiohttp, keep-alive). The ratio says
what the platform's front door, router and unix-socket hop cost over the bare container contract.
Also the console's cost: the endpoint invoked while a console page's live stream is open.

    .venv/bin/python bench/export.py [--seconds 5] [--out bench/results/export.json]

Placement: no pinning; the benchmark client, the server, its one instance and serve-model share the
machine's cores (2 in CI), so the figures are ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.export_helpers import serve_model  # noqa: E402
from tests.helpers import SKLEARN_IMAGE, Server, csv_row, deploy, diabetes, sklearn_model  # noqa: E402

from bench.realtime import load, print_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "export.json")
    args = parser.parse_args()
    body = csv_row(diabetes()[0][0]).encode()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(Path(tmp) / "data").start()
        try:
            sm, _ = srv.clients()
            srv.put_object("s3://bench/model.tar.gz", sklearn_model()[0])
            deploy(sm, "bench-sk", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://bench/model.tar.gz"})
            from typer.testing import CliRunner

            from modelhost.cli import app

            dest = Path(tmp) / "export"
            done = CliRunner().invoke(app, ["export", "bench-sk", "--to", str(dest), "--url", srv.url])
            assert done.exit_code == 0, done.output
            endpoint_url = f"{srv.url}/endpoints/bench-sk/invocations"
            with serve_model(dest, Path(tmp) / "serve.log") as url:
                for c in (1, 8):
                    results[f"serve-model c={c}"] = asyncio.run(load(f"{url}/invocations", body, c, args.seconds))
                    results[f"endpoint c={c}"] = asyncio.run(load(endpoint_url, body, c, args.seconds))
            stop = threading.Event()

            def watch() -> None:  # a console page's live stream, open while the endpoint is loaded
                with urllib.request.urlopen(f"{srv.url}/console/events/endpoints/bench-sk", timeout=30) as r:
                    while not stop.is_set():
                        r.readline()

            viewer = threading.Thread(target=watch, daemon=True)
            viewer.start()
            results["endpoint c=8, console open"] = asyncio.run(load(endpoint_url, body, 8, args.seconds))
            stop.set()
        finally:
            srv.stop()
    print_table(results)
    ratios = {
        f"endpoint / serve-model p50 at c={c}": results[f"endpoint c={c}"]["p50_ms"]
        / results[f"serve-model c={c}"]["p50_ms"]
        for c in (1, 8)
    }
    ratios["console open / closed, req/s at c=8"] = (
        results["endpoint c=8, console open"]["rps"] / results["endpoint c=8"]["rps"]
    )
    for name, value in ratios.items():
        print(f"{name:<45}{value:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"results": results, "ratios": ratios, "cores": os.cpu_count(), "python": platform.python_version()},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
