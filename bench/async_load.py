"""The load generators of bench/async.py's accept phase: aiohttp in the bench's own process, or
``wrk`` (C, one thread): the aiohttp client on one core caps at ~2,700-2,900 req/s even for the
cheapest request, so it measured itself, not the server.

wrk sends ``n`` InvokeEndpointAsync requests, one spare per thread (wrk may drop its first), ids
``w<thread>-<i>``; once a thread has sent its share, its connections send ``GET /ping`` (not
counted) until the bench stops wrk, once the server's table holds ``n`` rows. Accept times are the rows'
``received_time`` (the server's own clock, the same column in every version since 0008_async_fast),
so queue latency is received -> output written.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

LUA = """
local threads = {}
local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end
function init(args)
  per = tonumber(args[1])
  body = string.rep("x", tonumber(args[2]))
  sent, ok, bad = 0, 0, 0
  headers = {["Content-Type"] = "application/octet-stream",
             ["X-Amzn-SageMaker-Content-Type"] = "application/octet-stream"}
end
function request()
  if sent > per then  -- (one spare: wrk makes one request at start it may never send)
    return wrk.format("GET", "/ping")
  end
  sent = sent + 1
  headers["X-Amzn-SageMaker-Inference-Id"] = "w" .. tid .. "-" .. sent
  return wrk.format("POST", "/endpoints/bench-async/async-invocations", headers, body)
end
function response(status, hdrs, b)
  if status == 202 then ok = ok + 1 elseif status ~= 200 then bad = bad + 1 end
end
function done(summary, latency, requests)
  local ok_, bad_ = 0, 0
  for _, t in ipairs(threads) do
    ok_ = ok_ + t:get("ok")
    bad_ = bad_ + t:get("bad")
  end
  io.write(string.format('\\nRESULT {"accepted": %d, "errors": %d, "p50_us": %d, "p99_us": %d}\\n',
    ok_, bad_, latency:percentile(50), latency:percentile(99)))
end
"""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def aiohttp_accept(url: str, n: int, clients: int, body: bytes) -> dict:
    """The accept phase from this process's aiohttp clients (one core: ~2,800 req/s at most)."""
    accepted: dict[str, float] = {}
    accept_lat: list[float] = []
    errors = 0
    it = iter(range(n))
    started = time.time()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client() -> None:
            nonlocal errors
            for i in it:
                t0 = time.time()
                async with session.post(
                    f"{url}/endpoints/bench-async/async-invocations",
                    data=body,
                    headers={
                        "X-Amzn-SageMaker-Content-Type": "application/octet-stream",
                        "X-Amzn-SageMaker-Inference-Id": f"s{i}",
                    },
                ) as r:
                    await r.read()
                    if r.status != 202:
                        errors += 1
                        continue
                t1 = time.time()
                accepted[f"s{i}.out"] = t1
                accept_lat.append(t1 - t0)

        await asyncio.gather(*(client() for _ in range(clients)))
    submitted = time.time()
    return {
        "load": "aiohttp",
        "accepted": accepted,
        "errors": errors,
        "submit_rps": len(accepted) / (submitted - started),
        "accept_p50_ms": pct(accept_lat, 0.5) * 1000,
        "accept_p99_ms": pct(accept_lat, 0.99) * 1000,
        "started": started,
        "submitted": submitted,
    }


def rows(db_path: Path) -> dict[str, float]:
    """inference_id -> received_time of the async rows so far (read-only, beside the running server)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return dict(db.execute("SELECT inference_id, received_time FROM async_requests"))
    finally:
        db.close()


def count(db_path: Path) -> int:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT count(*) FROM async_requests").fetchone()[0])
    finally:
        db.close()


def wrk_accept(url: str, n: int, clients: int, body_bytes: int, db_path: Path, threads: int = 1) -> dict:
    """Send ``n`` requests with wrk; the accept figures and {output name: accept time}."""
    per = -(-n // threads)
    n = per * threads
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA)
        script = f.name
    base = count(db_path)
    started = time.time()
    proc = subprocess.Popen(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(clients),
            "-d",
            "600s",
            "--timeout",
            "30s",
            "-s",
            script,
            url,
            "--",
            str(per),
            str(body_bytes),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        while count(db_path) - base < n and proc.poll() is None:  # (the spare may or may not come)
            time.sleep(0.02)
        submitted = time.time()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        Path(script).unlink()
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result:\n{out}")
    result = json.loads(line.removeprefix("RESULT "))
    accepted = {f"{k}.out": t for k, t in rows(db_path).items() if k.startswith("w")}
    stamps = sorted(accepted.values())
    return {
        "load": "wrk",
        "accepted": accepted,
        "errors": result["errors"],
        "submit_rps": len(accepted) / (submitted - started),
        # the server's own accept rate: rows per second between its first and last receipt
        "server_accept_rps": (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan"),
        "accept_p50_ms": result["p50_us"] / 1000,
        "accept_p99_ms": result["p99_us"] / 1000,
        "started": started,
        "submitted": submitted,
    }
