"""Data capture overhead: the same model behind two endpoints of one server, one without capture and
one capturing 100 % of requests and responses, loaded with bench/realtime.py's closed-loop client at
c=16 (and c=1), alternating rounds in the same run; the median of ``--rounds``. The client, the server
and the instances share the machine's cores unpinned (the OS places them).

    .venv/bin/python bench/capture.py [--seconds 5] [--rounds 3] [--out bench/results/capture.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import ROLE, SKLEARN_IMAGE, Server, csv_row, diabetes, sklearn_model, wait_status  # noqa: E402

from bench.realtime import load  # noqa: E402

CAPTURE = {
    "EnableCapture": True,
    "InitialSamplingPercentage": 100,
    "DestinationS3Uri": "s3://bench/capture",
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]},
}


def deploy(sm: object, name: str, capture: bool) -> None:
    sm.create_model(  # type: ignore[attr-defined]
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://bench/model.tar.gz"},
    )
    sm.create_endpoint_config(  # type: ignore[attr-defined]
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
        **({"DataCaptureConfig": CAPTURE} if capture else {}),
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)  # type: ignore[attr-defined]
    assert wait_status(sm, name, ("InService", "Failed"))["EndpointStatus"] == "InService"


def in_process_cost(body: bytes, n: int = 20000) -> dict[str, float]:
    """CPU microseconds per captured request: ``offer`` (on the event loop) and the flush (serialise +
    write, in the writer thread), measured in this process with process_time (robust to a busy machine)."""
    from modelhost.hosting.capture import CaptureConfig, DataCapture
    from modelhost.store.blobs_local import LocalBlobStore
    from modelhost.store.buckets import BucketStore

    with tempfile.TemporaryDirectory() as tmp:
        buckets = BucketStore(Path(tmp) / "b", Path(tmp))
        buckets.create_bucket("bench")
        capture = DataCapture(LocalBlobStore(buckets))
        capture.configs = {"ep": CaptureConfig.parse(CAPTURE)}
        headers = [(b"content-type", b"text/csv"), (b"accept", b"application/json")]
        t = time.process_time()
        for _ in range(n):
            capture.offer("ep", "AllTraffic", body, headers, b"[206.1]", "application/json")
        offer = time.process_time() - t
        t = time.process_time()
        asyncio.run(capture.flush())
        write = time.process_time() - t
    return {"offer_us": offer / n * 1e6, "writer_us": write / n * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "capture.json")
    args = ap.parse_args()
    tarball, _model = sklearn_model()
    x, _ = diabetes()
    body = csv_row(x[0]).encode()
    runs: dict[str, list[dict]] = {"off_c16": [], "on_c16": [], "off_c1": [], "on_c1": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data")
        try:
            server.start()
            server.put_object("s3://bench/model.tar.gz", tarball)
            sm, _ = server.clients()
            deploy(sm, "off", capture=False)
            deploy(sm, "on", capture=True)
            for _ in range(args.rounds):
                for conc in (16, 1):
                    for side in ("off", "on"):
                        url = f"{server.url}/endpoints/{side}/invocations"
                        runs[f"{side}_c{conc}"].append(asyncio.run(load(url, body, conc, args.seconds)))
            time.sleep(2)  # the last flush
            captured = 0
            for path in (server.data_dir / "buckets" / "bench" / "capture" / "on").rglob("*.jsonl"):
                captured += sum(1 for _ in path.open())
        finally:
            server.stop()
    sent = sum(r["requests"] for r in runs["on_c16"] + runs["on_c1"])
    results = {
        k: {
            "rps": statistics.median(r["rps"] for r in v),
            "p50_ms": statistics.median(r["p50_ms"] for r in v),
            "p99_ms": statistics.median(r["p99_ms"] for r in v),
            "errors": sum(r["errors"] for r in v),
        }
        for k, v in runs.items()
    }
    ratio = results["on_c16"]["rps"] / results["off_c16"]["rps"]
    cost = in_process_cost(body)
    print(
        f"\ndata capture overhead; 1 CSV row, LinearRegression; {os.cpu_count()} CPUs; median of {args.rounds} rounds"
    )
    print(f"{'target':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for k, r in results.items():
        print(f"{k:<10}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['errors']:>8}")
    print(f"\nthroughput at c=16 with 100 % capture / without = {ratio:.3f} (goal >= 0.95)")
    print(
        f"capture's own CPU per request (in-process): offer {cost['offer_us']:.1f} us on the event loop, "
        f"{cost['writer_us']:.1f} us in the writer thread"
    )
    print(f"p50 at c=1: +{results['on_c1']['p50_ms'] - results['off_c1']['p50_ms']:.3f} ms with capture")
    print(
        f"records captured: {captured} (requests to the capturing endpoint after warm-up: {sent}; "
        "+50 warm-up each phase)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "placement": "client, server and both endpoints' instances on the same cores, unpinned",
                "results": results,
                "throughput_ratio_c16": ratio,
                "in_process_cpu_us_per_request": cost,
                "records_captured": captured,
                "requests_to_capturing_endpoint": sent,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
