"""Signature verification cost, in-process: the Authenticate middleware on a signed InvokeEndpoint
request with a credentials file (botocore's SigV4 canonicalisation, cached signing key, body hash)
against the same middleware without one (parse only), in the same run. One process, one core;
no network, so the figure is the verification's own CPU time (bench/realtime.py measures it end
to end, where this machine's noise is larger than the difference).

    .venv/bin/python bench/auth.py [--requests 20000] [--out bench/results/auth.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from modelhost.security import Verifier, load_credentials
from modelhost.server import protocols
from modelhost.server.asgi import ENDPOINT, ROUTE
from modelhost.server.front_door import Route
from modelhost.server.middleware.auth import Authenticate, Security

BODY = b"0.03,0.05,0.06,0.02,-0.04,-0.03,-0.04,-0.002,0.02,-0.02"
PATH = "/endpoints/bench/invocations"


def signed_headers() -> list[tuple[bytes, bytes]]:
    request = AWSRequest(
        method="POST", url=f"http://127.0.0.1:8080{PATH}", data=BODY, headers={"Content-Type": "text/csv"}
    )
    SigV4Auth(Credentials("AKIDBENCH", "bench-secret"), "sagemaker", "us-east-1").add_auth(request)
    headers = [(k.lower().encode(), v.encode() if isinstance(v, str) else v) for k, v in request.headers.items()]
    return [*headers, (b"host", b"127.0.0.1:8080"), (b"content-length", str(len(BODY)).encode())]


async def run(middleware: Authenticate, headers: list[tuple[bytes, bytes]], n: int) -> list[float]:
    reached = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal reached
        reached += 1
        await receive()

    middleware.app = app

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(_message: Any) -> None:
        raise AssertionError("refused: the benchmark request must verify")

    route = Route("invoke", lambda _s: True, app, protocols.REST_JSON)
    samples = []
    for _ in range(n):
        scope = {
            "type": "http",
            "method": "POST",
            "path": PATH,
            "raw_path": PATH.encode(),
            "query_string": b"",
            "headers": headers,
            ROUTE: route,
            ENDPOINT: "bench",
        }
        started = time.perf_counter()
        await middleware(scope, receive, send)
        samples.append((time.perf_counter() - started) * 1e6)
    assert reached == n
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "auth.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        creds = Path(tmp) / "credentials"
        creds.write_text("[bench]\naws_access_key_id = AKIDBENCH\naws_secret_access_key = bench-secret\n")
        security = Security(Verifier(load_credentials(str(creds), "123456789012")), "us-east-1", "123456789012")
        headers = signed_headers()
        results: dict[str, dict[str, float]] = {}
        for _round in range(3):  # interleaved, so drift hits both sides alike
            for name, mw in (("parse_only", Authenticate(None, None)), ("verify", Authenticate(None, security))):  # type: ignore[arg-type]
                samples = asyncio.run(run(mw, headers, args.requests))
                p50 = statistics.median(samples)
                best = results.setdefault(name, {"p50_us": p50, "mean_us": statistics.fmean(samples)})
                best["p50_us"] = min(best["p50_us"], p50)
    cost = results["verify"]["p50_us"] - results["parse_only"]["p50_us"]
    print(f"Authenticate middleware, one signed InvokeEndpoint request; {args.requests} calls x 3 rounds, one process")
    print(f"{'mode':<12}{'p50 us':>10}{'mean us':>10}")
    for name, r in results.items():
        print(f"{name:<12}{r['p50_us']:>10.1f}{r['mean_us']:>10.1f}")
    ratio = results["verify"]["p50_us"] / results["parse_only"]["p50_us"]
    print(f"verification cost, p50: {cost:.1f} us (verify / parse-only = {ratio:.1f}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": platform.platform(), "requests": args.requests, "results": results, "cost_us": cost}, indent=2
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
