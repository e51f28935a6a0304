"""Real-time invoke benchmark: platform overhead of modelhost against references measured in the
same run.

An endpoint serving a scikit-learn LinearRegression trained on load_diabetes is invoked over
HTTP with one CSV row at concurrency 1 and 16. References: the model called in-process, and the
same model behind a bare Starlette app (one uvicorn process). Prints a table; writes JSON.

    .venv/bin/python bench/realtime.py [--seconds 5] [--instances 1] [--out bench/results/realtime.json]
        [--src DIR]  (run the modelhost server from another checkout's src/, e.g. a `git worktree`
                      of an older commit, for before/after figures; also MODELHOST_BENCH_SRC)

Then, unless skipped: the all-MiniLM-L6-v2 endpoint with and without dynamic batching against the
model in-process at batch 1/8/32 (bench/embeddings.py, --no-embeddings), and response streaming of a
GPT-2 shaped model against the same model streaming in-process (bench/streaming.py, --no-streaming).

Signature verification: the same endpoint on a second server started with --credentials-file,
invoked with SigV4-signed requests (signed once per phase by botocore, so only the server's cost
shows); "signature verification at c=1" is the p50 difference, median of 3 interleaved rounds.

Before/after in one sitting:

    git worktree add /tmp/mh-before <commit>
    .venv/bin/python bench/realtime.py --no-embeddings --no-streaming --src /tmp/mh-before/src --out /tmp/before.json
    .venv/bin/python bench/realtime.py --no-embeddings --no-streaming --out /tmp/after.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import boto3
import joblib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import SKLEARN_IMAGE, Server, csv_row, deploy, free_port, sklearn_model  # noqa: E402


async def load(
    url: str,
    body: bytes,
    concurrency: int,
    seconds: float,
    content_type: str = "text/csv",
    extra_headers: dict[str, str] | None = None,
) -> dict:
    """Closed-loop load: `concurrency` clients each sending the next request when the last returns."""
    latencies: list[float] = []
    errors = 0
    headers = {"Content-Type": content_type, "Accept": "application/json", **(extra_headers or {})}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # warm-up: open connections, warm caches
        for _ in range(50):
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` (and so what it starts later) on ``cpus``; sched_setaffinity(pid) alone
    moves only the main thread."""
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(task), cpus)
        except OSError:
            pass  # the thread ended meanwhile


def print_table(results: dict[str, dict]) -> None:
    """One row per measured target: req/s, p50, p99, errors."""
    print(f"{'target':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, r in results.items():
        print(f"{name:<22}{r['rps']:>10.1f}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}{r.get('errors', 0):>8}")


def in_process(model: object, row: str, seconds: float) -> dict:
    lat = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        x = np.array([[float(v) for v in row.split(",")]])
        json.dumps(model.predict(x).tolist())  # type: ignore[attr-defined]
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return {
        "requests": len(lat),
        "rps": len(lat) / sum(lat),
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
    }


BENCH_KEY = ("AKIDBENCH", "bench-secret")


def sigv4_headers(url: str, body: bytes, content_type: str = "text/csv") -> dict[str, str]:
    """SigV4 headers for one invoke, signed once by botocore (valid 15 minutes: every request of a
    phase reuses them, so the client's own signing time is not in the figures)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": content_type, "Accept": "application/json"}
    )
    SigV4Auth(Credentials(*BENCH_KEY), "sagemaker", "us-east-1").add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "x-amz-date")}


def verification_cost(mh_url: str, auth_url: str, body: bytes, seconds: float, rounds: int = 3) -> dict:
    """p50 at concurrency 1 without and with signature verification, phases interleaved (the median
    of ``rounds`` rounds each), and the difference in microseconds."""
    plain, signed = [], []
    for _ in range(rounds):
        plain.append(asyncio.run(load(mh_url, body, 1, seconds / rounds)))
        signed.append(
            asyncio.run(load(auth_url, body, 1, seconds / rounds, extra_headers=sigv4_headers(auth_url, body)))
        )
    p50_plain = sorted(r["p50_ms"] for r in plain)[rounds // 2]
    p50_signed = sorted(r["p50_ms"] for r in signed)[rounds // 2]
    assert all(r["errors"] == 0 for r in signed), signed
    return {
        "p50_ms_unauthenticated": p50_plain,
        "p50_ms_verified": p50_signed,
        "verification_p50_us": (p50_signed - p50_plain) * 1e3,
        "rounds": rounds,
    }


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each load phase")
    ap.add_argument("--instances", type=int, default=1, help="instances of the modelhost endpoint")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "realtime.json")
    ap.add_argument("--no-embeddings", action="store_true", help="skip the all-MiniLM-L6-v2 embedding endpoint")
    ap.add_argument("--no-auth", action="store_true", help="skip the run with signature verification on")
    ap.add_argument("--no-streaming", action="store_true", help="skip the response-streaming case (bench/streaming.py)")
    ap.add_argument(
        "--pin",
        action="store_true",
        help="servers (modelhost with its instances, bare Starlette) on CPU 0, the load generator on CPU 1",
    )
    ap.add_argument(
        "--src",
        type=Path,
        default=os.environ.get("MODELHOST_BENCH_SRC") or None,
        help="run the modelhost server from this source tree (a checkout's src/ directory)",
    )
    args = ap.parse_args()
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
    print(f"modelhost server from {where}")

    from tests.helpers import diabetes

    tarball, model = sklearn_model()
    x, _ = diabetes()
    row = csv_row(x[0])
    body = row.encode()
    if args.pin:
        pin_process(os.getpid(), {0})
    results: dict[str, dict] = {"in_process": in_process(model, row, min(args.seconds, 2))}
    if args.pin:
        pin_process(os.getpid(), {1})
    verification: dict = {}

    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "model.joblib"
        joblib.dump(model, model_path)
        port = free_port()
        bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_app.py"), str(model_path), str(port)])
        if args.pin:
            pin_process(bare.pid, {0})
        server = Server(Path(tmp) / "data", env=server_env)
        creds = Path(tmp) / "credentials"
        creds.write_text(f"[bench]\naws_access_key_id = {BENCH_KEY[0]}\naws_secret_access_key = {BENCH_KEY[1]}\n")
        auth_server = Server(Path(tmp) / "auth-data", env=server_env, credentials_file=creds)
        try:
            wait_http(f"http://127.0.0.1:{port}/invocations")
            bare_url = f"http://127.0.0.1:{port}/invocations"
            server.start()
            if args.pin:
                assert server.proc is not None
                pin_process(server.proc.pid, {0})  # its instances start later and inherit CPU 0
            server.put_object("s3://bench/model.tar.gz", tarball)
            sm, _ = server.clients()
            desc = deploy(
                sm,
                "bench",
                {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://bench/model.tar.gz"},
                instances=args.instances,
            )
            assert desc["EndpointStatus"] == "InService", desc
            mh_url = f"{server.url}/endpoints/bench/invocations"
            for conc in (1, 16):
                results[f"bare_starlette_c{conc}"] = asyncio.run(load(bare_url, body, conc, args.seconds))
                results[f"modelhost_c{conc}"] = asyncio.run(load(mh_url, body, conc, args.seconds))
            if not args.no_auth:  # the same endpoint on a server verifying signatures
                auth_server.start()
                if args.pin:
                    assert auth_server.proc is not None
                    pin_process(auth_server.proc.pid, {0})
                auth_server.put_object("s3://bench/model.tar.gz", tarball)
                session = boto3.Session(
                    aws_access_key_id=BENCH_KEY[0], aws_secret_access_key=BENCH_KEY[1], region_name="us-east-1"
                )
                auth_sm = session.client("sagemaker", endpoint_url=auth_server.url)
                desc = deploy(auth_sm, "bench", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://bench/model.tar.gz"})
                assert desc["EndpointStatus"] == "InService", desc
                auth_url = f"{auth_server.url}/endpoints/bench/invocations"
                results["modelhost_verified_c1"] = asyncio.run(
                    load(auth_url, body, 1, args.seconds, extra_headers=sigv4_headers(auth_url, body))
                )
                verification = verification_cost(mh_url, auth_url, body, args.seconds)
        finally:
            auth_server.stop()
            server.stop()
            bare.terminate()
            bare.wait(10)

    overhead_ms = results["modelhost_c1"]["p50_ms"] - results["bare_starlette_c1"]["p50_ms"]
    ratios = {
        "overhead_p50_c1_ms": overhead_ms,
        "latency_ratio_p50_c1": results["modelhost_c1"]["p50_ms"] / results["bare_starlette_c1"]["p50_ms"],
        "throughput_ratio_c16": results["modelhost_c16"]["rps"] / results["bare_starlette_c16"]["rps"],
    }
    print(
        f"\nreal-time invoke, 1 CSV row, LinearRegression(load_diabetes); {args.instances} instance(s); "
        f"{os.cpu_count()} CPUs; pinned: {args.pin}"
    )
    print_table(results)
    print(
        f"\nplatform overhead at c=1, p50: {overhead_ms:.3f} ms "
        f"(modelhost p50 / bare p50 = {ratios['latency_ratio_p50_c1']:.2f}x)"
    )
    print(f"throughput at c=16: modelhost / bare Starlette = {ratios['throughput_ratio_c16']:.2f}")
    if verification:
        print(
            f"signature verification at c=1, p50: {verification['verification_p50_us']:.1f} us "
            f"({verification['p50_ms_unauthenticated']:.3f} ms without, {verification['p50_ms_verified']:.3f} ms with; "
            f"median of {verification['rounds']} interleaved rounds; goal <= 30 us)"
        )
    embeddings: dict = {}
    if not args.no_embeddings:
        from bench import embeddings as minilm

        try:
            emb_results, emb_ratios = minilm.run(args.seconds, args.pin)
        except ImportError as exc:  # the huggingface extra is not installed
            print(f"\n(skipping the MiniLM embedding endpoint: {exc})")
        else:
            embeddings = {"results": emb_results, "ratios": emb_ratios}
            print("\nall-MiniLM-L6-v2 sentence-embedding endpoint (HF runtime) vs the model in-process")
            print_table(emb_results)
            for k, v in emb_ratios.items():
                print(f"{k:<28}{v:>8.2f}")
    streaming: dict = {}
    if not args.no_streaming:
        from bench import streaming as stream_bench

        try:
            streaming = stream_bench.run(pin=args.pin)
        except ImportError as exc:  # the huggingface extra is not installed
            print(f"\n(skipping the streaming case: {exc})")
        else:
            stream_bench.print_figures(streaming)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "instances": args.instances,
                "seconds": args.seconds,
                "server_source": where,
                "results": results,
                "ratios": ratios,
                "verification": verification,
                "embeddings": embeddings,
                "streaming": streaming,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
