"""Multi-model endpoint benchmark: 1,000 scikit-learn models under one prefix, one 2-instance MME whose
memory budget holds 200 of them, a Zipf-distributed request stream over all 1,000.

Reports, against references measured in the same run:
- warm-hit overhead: p50 of an MME request for a loaded model minus p50 of the same model on a
  single-model endpoint (interleaved rounds, concurrency 1; goal <= 0.1 ms);
- cold-load latency (first request for a model) against loading the same model in-process;
- hit rate, loads, evictions and latencies of the Zipf stream;
- peak RSS of each instance against its baseline + budget;
- 100 first requests racing for one model: how many loads (must be 1).

    .venv/bin/python bench/mme.py [--models 1000] [--requests 6000] [--zipf 1.1] [--out bench/results/mme.json]

Placement: the server and its instance processes are not pinned; they share the machine's cores
(printed). Each model is a LinearRegression carrying --model-kb of parameters (real memory once loaded).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import joblib
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import SKLEARN_IMAGE, Server, deploy, diabetes  # noqa: E402


def model_tar(i: int, kb: int) -> tuple[bytes, bytes]:
    from sklearn.linear_model import LinearRegression

    x, y = diabetes()
    model = LinearRegression().fit(x, y + i)
    model.padding_ = np.full(kb * 1024 // 8, float(i))  # compresses to nothing, takes kb once loaded
    buf = io.BytesIO()
    joblib.dump(model, buf)
    raw = buf.getvalue()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.joblib")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    return out.getvalue(), raw


def in_process_load(raws: list[bytes], tmp: Path) -> tuple[float, float]:
    """(p50 seconds to joblib.load one model, RSS bytes per loaded model) in this process."""
    paths = []
    for i, raw in enumerate(raws):
        p = tmp / f"calib-{i}.joblib"
        p.write_bytes(raw)
        paths.append(p)
    joblib.load(paths[0])  # imports
    proc = psutil.Process()
    before = proc.memory_info().rss
    times, keep = [], []
    for p in paths:
        t = time.perf_counter()
        keep.append(joblib.load(p))
        times.append(time.perf_counter() - t)
    per_model = (proc.memory_info().rss - before) / len(paths)
    return float(np.median(times)), per_model


def metric(url: str, name: str, endpoint: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and f'endpoint="{endpoint}"' in line
    )


async def timed(session: aiohttp.ClientSession, url: str, body: bytes, target: str | None) -> tuple[float, int]:
    headers = {"Content-Type": "text/csv"}
    if target is not None:
        headers["X-Amzn-SageMaker-Target-Model"] = target
    t = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as resp:
        await resp.read()
        return time.perf_counter() - t, resp.status


async def sequential(url: str, body: bytes, target: str | None, n: int) -> list[float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        return [(await timed(s, url, body, target))[0] for _ in range(n)]


async def stream(url: str, body: bytes, targets: list[str], concurrency: int) -> tuple[list[float], int]:
    queue = list(reversed(targets))
    lat: list[float] = []
    errors = 0

    async def client(s: aiohttp.ClientSession) -> None:
        nonlocal errors
        while queue:
            dt, status = await timed(s, url, body, queue.pop())
            lat.append(dt)
            errors += status != 200

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        await asyncio.gather(*(client(s) for _ in range(concurrency)))
    return lat, errors


async def race(url: str, body: bytes, target: str, n: int) -> list[int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        return [st for _, st in await asyncio.gather(*(timed(s, url, body, target) for _ in range(n)))]


class RssSampler(threading.Thread):
    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = {p.pid: 0 for p in self.procs}
        self.running = True

    def run(self) -> None:
        while self.running:
            for p in self.procs:
                self.peak[p.pid] = max(self.peak[p.pid], p.memory_info().rss)
            time.sleep(0.02)


def mme_workers(server: Server) -> list[psutil.Process]:
    assert server.proc is not None
    out = []
    for child in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if child.environ().get("SAGEMAKER_MULTI_MODEL") == "true":
                out.append(child)
        except psutil.Error:
            pass
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--hold", type=int, default=200, help="models the per-instance budget holds")
    ap.add_argument("--model-kb", type=int, default=512)
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--warm-requests", type=int, default=400)
    ap.add_argument("--out", default=str(ROOT / "bench/results/mme.json"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mh-bench-mme-"))
    x, _ = diabetes()
    body = ",".join(repr(float(v)) for v in x[0]).encode()
    print(f"building {args.models} models ...", flush=True)
    tars, raws = zip(*(model_tar(i, args.model_kb) for i in range(args.models)), strict=True)
    load_p50, per_model = in_process_load(list(raws[:40]), tmp)
    budget_mb = args.hold * per_model / (1024 * 1024)
    server = Server(tmp / "data", env={"MODELHOST_PING_INTERVAL": "5"}).start()
    try:
        prefix = "s3://bench/mme/"
        for i, data in enumerate(tars):
            server.put_object(f"{prefix}m{i}.tar.gz", data)
        server.put_object("s3://bench/single/model.tar.gz", tars[0])
        server.put_object(f"{prefix}race.tar.gz", tars[1])  # never in the stream: its first requests race
        sm, _ = server.clients()
        deploy(sm, "mme", {"Image": SKLEARN_IMAGE, "Mode": "MultiModel", "ModelDataUrl": prefix,
                           "Environment": {"MODELHOST_MME_MEMORY_MB": f"{budget_mb:.1f}"}}, instances=2)  # fmt: skip
        deploy(sm, "single", {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://bench/single/model.tar.gz"})
        mme_url, single_url = f"{server.url}/endpoints/mme/invocations", f"{server.url}/endpoints/single/invocations"
        workers = mme_workers(server)
        baselines = {w.pid: w.memory_info().rss for w in workers}

        # warm-hit overhead: interleaved rounds on the same model
        asyncio.run(sequential(mme_url, body, "m0.tar.gz", 50))
        asyncio.run(sequential(single_url, body, None, 50))
        mme_lat, single_lat = [], []
        for _ in range(5):
            mme_lat += asyncio.run(sequential(mme_url, body, "m0.tar.gz", args.warm_requests // 5))
            single_lat += asyncio.run(sequential(single_url, body, None, args.warm_requests // 5))

        # cold loads: first requests for models nobody asked for yet, one at a time
        fresh = range(args.models - 30, args.models)
        cold = [asyncio.run(sequential(mme_url, body, f"m{i}.tar.gz", 1))[0] for i in fresh]

        # the Zipf stream over all models
        rng = np.random.default_rng(1)
        ranks = np.arange(1, args.models + 1)
        p = ranks ** (-args.zipf)
        targets = [f"m{i}.tar.gz" for i in rng.choice(args.models, size=args.requests, p=p / p.sum())]
        before = {k: metric(server.url, f"modelhost_{k}", "mme") for k in (
            "model_cache_hit_total", "model_cache_lookups_total", "model_loading_time_microseconds_count",
            "model_unloading_time_microseconds_count")}  # fmt: skip
        sampler = RssSampler([w.pid for w in workers])
        sampler.start()
        t0 = time.perf_counter()
        zipf_lat, errors = asyncio.run(stream(mme_url, body, targets, args.concurrency))
        elapsed = time.perf_counter() - t0
        sampler.running = False
        sampler.join()
        after = {k: metric(server.url, f"modelhost_{k}", "mme") for k in before}
        delta = {k: after[k] - before[k] for k in before}

        # 100 first requests racing for one model
        loads0 = metric(server.url, "modelhost_model_loading_time_microseconds_count", "mme")
        statuses = asyncio.run(race(mme_url, body, "race.tar.gz", 100))
        race_loads = metric(server.url, "modelhost_model_loading_time_microseconds_count", "mme") - loads0
        loaded = metric(server.url, "modelhost_loaded_model_count", "mme")
    finally:
        server.stop()

    budget_bytes = budget_mb * 1024 * 1024
    peaks = {
        str(pid): {"baseline_mb": baselines[pid] / 2**20, "peak_mb": peak / 2**20,
                   "growth_mb": (peak - baselines[pid]) / 2**20}
        for pid, peak in sampler.peak.items()
    }  # fmt: skip
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
                    "python": platform.python_version()},
        "placement": "server and instance processes unpinned, sharing all cores listed in affinity",
        "models": args.models, "model_kb": args.model_kb, "instances": 2,
        "budget_mb_per_instance": budget_mb, "budget_holds_models": args.hold,
        "in_process_rss_per_model_kb": per_model / 1024,
        "warm_hit": {"mme_p50_ms": pct(mme_lat, 50), "single_p50_ms": pct(single_lat, 50),
                     "overhead_p50_ms": pct(mme_lat, 50) - pct(single_lat, 50),
                     "mme_p99_ms": pct(mme_lat, 99), "single_p99_ms": pct(single_lat, 99)},
        "cold_load": {"p50_ms": pct(cold, 50), "in_process_load_p50_ms": load_p50 * 1000,
                      "ratio": pct(cold, 50) / (load_p50 * 1000)},
        "zipf": {"s": args.zipf, "requests": args.requests, "concurrency": args.concurrency, "errors": errors,
                 "throughput_rps": args.requests / elapsed, "p50_ms": pct(zipf_lat, 50), "p99_ms": pct(zipf_lat, 99),
                 "hit_rate": delta["model_cache_hit_total"] / max(delta["model_cache_lookups_total"], 1),
                 "loads": delta["model_loading_time_microseconds_count"],
                 "evictions": delta["model_unloading_time_microseconds_count"], "loaded_after": loaded},
        "peak_rss": peaks,
        "peak_growth_over_budget_mb": max(v["growth_mb"] for v in peaks.values()) - budget_bytes / 2**20,
        "race": {"requests": 100, "ok": sum(s == 200 for s in statuses), "loads": race_loads},
    }  # fmt: skip
    rows = [
        ("warm hit p50: MME / single-model endpoint (ms)",
         f"{result['warm_hit']['mme_p50_ms']:.3f} / {result['warm_hit']['single_p50_ms']:.3f}"),
        ("warm-hit overhead p50 (ms; goal <= 0.1)", f"{result['warm_hit']['overhead_p50_ms']:.3f}"),
        ("cold load p50 (ms) / in-process joblib.load p50 (ms)",
         f"{result['cold_load']['p50_ms']:.1f} / {result['cold_load']['in_process_load_p50_ms']:.2f}"),
        ("zipf hit rate", f"{result['zipf']['hit_rate']:.3f}"),
        ("zipf loads / evictions", f"{result['zipf']['loads']:.0f} / {result['zipf']['evictions']:.0f}"),
        ("zipf p50 / p99 (ms), req/s", f"{result['zipf']['p50_ms']:.2f} / {result['zipf']['p99_ms']:.1f}, "
         f"{result['zipf']['throughput_rps']:.0f}"),
        ("budget per instance (MB)", f"{budget_mb:.1f}"),
        ("peak RSS growth per instance (MB)", ", ".join(f"{v['growth_mb']:.1f}" for v in peaks.values())),
        ("100 racing first requests: ok / loads", f"{result['race']['ok']} / {result['race']['loads']:.0f}"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
