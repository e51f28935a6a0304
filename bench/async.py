"""Asynchronous inference benchmark: throughput and queue latency of many small requests and of
a few very large ones, against the same model invoked synchronously in the same run.

One server, one Python model (upper-cases small bodies, echoes large ones), two endpoints on it:
an async one (``MaxConcurrentInvocationsPerInstance`` --concurrency) and a real-time one.

* small: --small requests (default 10000) of --small-bytes bytes, sent inline by --clients
  concurrent HTTP clients. Async: accept latency (until the 202), queue latency (202 -> output
  object written, from the object's mtime), drain throughput. Sync: InvokeEndpoint of the same
  bodies at the same client concurrency.
* large: --large requests (default 20) of --large-mb MB (default 200) read from the bucket store;
  each output (an echo, the same size) is checked and deleted once written. The server's RSS is
  sampled throughout: streaming keeps it flat. Sync is n/a (InvokeEndpoint stops at 6 MB).

    .venv/bin/python bench/async.py [--small 10000] [--large 20] [--large-mb 200] [--out bench/results/async.json]

``--src OTHER/src`` runs a server from another checkout first (before/after in one sitting, e.g.
``git -C . archive <commit> src | tar -x -C /tmp/before`` then ``--src /tmp/before/src``),
``--rounds N`` alternates them. ``--accept-load wrk`` (the default where wrk is installed) sends
the async accept phase with wrk and a Lua script (bench/async_load.py): the aiohttp client on one
core caps at ~2,800 req/s, wrk does not, so accept req/s is the server's. ``--py-spy FILE``
records the server (py-spy raw format) during the async phase.

Each run also times the file system's own create + write + rename of a 100 B file under the data
dir's root (``--data-root``), the floor of one output object: on some virtual disks it varies
tenfold from one minute to the next, and it is most of what an async request costs there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import boto3
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import PYTHON_IMAGE, ROLE, Server, tarball, wait_status  # noqa: E402

from bench import async_load  # noqa: E402
from bench.hop import source_env  # noqa: E402

MODEL = """
def model_fn(model_dir):
    return None


def input_fn(data, content_type):
    return data


def predict_fn(data, model):
    if isinstance(data, str):
        data = data.encode()
    return data if len(data) > 1024 * 1024 else bytes(data).upper()


def output_fn(prediction, accept):
    return prediction, "application/octet-stream"
"""
BUCKET = "bench-async"


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of the server and of its instances so far."""
    out = {"server": 0.0, "server_system": 0.0, "instances": 0.0}
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            out["server" if p.pid == pid else "instances"] += t.user + t.system
            if p.pid == pid:
                out["server_system"] += t.system
        except psutil.NoSuchProcess:
            pass
    return out


def per_request_ms(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {k: (after[k] - before[k]) / n * 1000 for k in before}


def cpus(spec: str) -> list[int]:
    return [int(c) for c in spec.split(",")]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self.samples.append(self.proc.memory_info().rss)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def inline_outputs(out_dir: Path) -> list[tuple[str, float]]:
    """(name, mtime) of the small outputs the bucket store keeps in its index (no file; a server
    from before inline objects has none), read from the index beside the running server."""
    bucket_dir = out_dir.parent
    data_dir = bucket_dir.parent.parent
    index = data_dir / "buckets-meta" / "objects.db"
    prefix = out_dir.relative_to(bucket_dir).as_posix() + "/"
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        cols = {r[1] for r in db.execute("PRAGMA table_info(objects)")}
        if "data" not in cols:
            return []
        rows = db.execute(
            "SELECT key, mtime_ns FROM objects WHERE bucket=? AND data IS NOT NULL AND substr(key, 1, ?) = ?",
            (bucket_dir.name, len(prefix), prefix),
        ).fetchall()
    finally:
        db.close()
    return [(k[len(prefix) :], m / 1e9) for k, m in rows if "/" not in k[len(prefix) :]]


async def async_small(url: str, n: int, clients: int, body: bytes, out_dir: Path, load: str, db: Path) -> dict:
    if load == "wrk":
        phase = await asyncio.to_thread(async_load.wrk_accept, url, n, clients, len(body), db)
    else:
        phase = await async_load.aiohttp_accept(url, n, clients, body)
    accepted: dict[str, float] = phase.pop("accepted")
    started = phase.pop("started")
    phase.pop("submitted")
    done: dict[str, float] = {}
    deadline = time.monotonic() + 600
    while len(done) < len(accepted) and time.monotonic() < deadline:
        with os.scandir(out_dir) as entries:
            for e in entries:
                if e.name not in done and e.name in accepted:
                    done[e.name] = e.stat().st_mtime
        for name, mtime in inline_outputs(out_dir):
            if name not in done and name in accepted:
                done[name] = mtime
        await asyncio.sleep(0.05)
    finished = max(done.values()) if done else time.time()
    queue_lat = [done[k] - accepted[k] for k in done]
    return {
        "requests": n,
        "completed": len(done),
        "rps": len(done) / (finished - started),
        "queue_p50_ms": pct(queue_lat, 0.5) * 1000,
        "queue_p99_ms": pct(queue_lat, 0.99) * 1000,
        "seconds": finished - started,
        **phase,
    }


async def sync_small(url: str, n: int, clients: int, body: bytes) -> dict:
    lat: list[float] = []
    errors = 0
    it = iter(range(n))
    started = time.time()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client() -> None:
            nonlocal errors
            for _ in it:
                t0 = time.time()
                try:
                    async with session.post(
                        f"{url}/endpoints/bench-sync/invocations",
                        data=body,
                        headers={"Content-Type": "application/octet-stream"},
                    ) as r:
                        await r.read()
                        if r.status != 200:
                            errors += 1
                except aiohttp.ClientError:  # (counted, not fatal: an overloaded machine resets a few)
                    errors += 1
                    continue
                lat.append(time.time() - t0)

        await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.time() - started
    return {
        "requests": n,
        "errors": errors,
        "rps": n / elapsed,
        "p50_ms": pct(lat, 0.5) * 1000,
        "p99_ms": pct(lat, 0.99) * 1000,
        "seconds": elapsed,
    }


def large(server: Server, rt, count: int, mb: int) -> dict:  # type: ignore[no-untyped-def]
    size = mb * 1024 * 1024
    src = server.data_dir / "buckets" / BUCKET / "large-in" / "payload.bin"
    src.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1024 * 1024)
    with open(src, "wb") as f:
        for _ in range(mb):
            f.write(block)
    assert server.proc is not None
    with RssSampler(server.proc.pid) as rss:
        started = time.time()
        accepted = {}
        for i in range(count):
            resp = rt.invoke_endpoint_async(
                EndpointName="bench-async",
                InputLocation=f"s3://{BUCKET}/large-in/payload.bin",
                InferenceId=f"l{i}",
                S3OutputPathExtension="large",
                ContentType="application/octet-stream",
            )
            accepted[resp["OutputLocation"].rsplit("/", 1)[1]] = time.time()
        out_dir = server.data_dir / "buckets" / BUCKET / "out" / "large"
        done: dict[str, float] = {}
        deadline = time.monotonic() + 1800
        while len(done) < count and time.monotonic() < deadline:
            if out_dir.exists():
                for p in list(out_dir.iterdir()):
                    if p.name in accepted and p.name not in done:
                        st = p.stat()
                        assert st.st_size == size, f"{p.name}: {st.st_size} bytes, expected {size}"
                        done[p.name] = st.st_mtime
                        p.unlink()  # keep the disk in check
            time.sleep(0.05)
        finished = max(done.values()) if done else time.time()
    base = rss.samples[0]
    queue_lat = [done[k] - accepted[k] for k in done]
    return {
        "requests": count,
        "payload_mb": mb,
        "completed": len(done),
        "rps": len(done) / (finished - started),
        "mb_per_s": len(done) * mb * 2 / (finished - started),  # in and out
        "queue_p50_s": pct(queue_lat, 0.5),
        "queue_max_s": max(queue_lat) if queue_lat else float("nan"),
        "server_rss_start_mb": base / 2**20,
        "server_rss_peak_mb": max(rss.samples) / 2**20,
        "server_rss_growth_mb": (max(rss.samples) - base) / 2**20,
        "seconds": finished - started,
    }


def file_create_us(root: Path, n: int = 2000) -> float:
    """The file system's own cost of one small object: create, write 100 B, rename into another
    directory (what the bucket store does per object), in a fresh directory beside the data dir."""
    d = Path(tempfile.mkdtemp(prefix="mh-bench-fs-", dir=root))
    try:
        (d / "tmp").mkdir()
        (d / "out").mkdir()
        started = time.perf_counter()
        for i in range(n):
            fd = os.open(d / "tmp" / str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, b"x" * 100)
            os.close(fd)
            os.replace(d / "tmp" / str(i), d / "out" / f"{i}.out")
        return (time.perf_counter() - started) / n * 1e6
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_one(args: argparse.Namespace, env: dict[str, str]) -> dict:
    """One server (from ``env``'s modelhost), the small (and large) phases against it."""
    tmp = Path(tempfile.mkdtemp(prefix="mh-bench-async-", dir=args.data_root))
    server = Server(tmp / "data", env={"MODELHOST_STOP_GRACE": "5", **env}).start()
    try:
        if args.server_cpus:  # before any instance starts: they inherit it
            assert server.proc is not None
            psutil.Process(server.proc.pid).cpu_affinity(cpus(args.server_cpus))
        server.put_object("s3://models/bench/model.tar.gz", tarball({"code/inference.py": MODEL}))
        sm, rt = server.clients(read_timeout=600)
        s3 = boto3.Session(aws_access_key_id="a", aws_secret_access_key="b", region_name="us-east-1").client(
            "s3", endpoint_url=server.url
        )
        s3.create_bucket(Bucket=BUCKET)
        for name, extra in (
            (
                "bench-async",
                {
                    "AsyncInferenceConfig": {
                        "OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/out"},
                        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": args.concurrency},
                    }
                },
            ),
            ("bench-sync", {}),
        ):
            sm.create_model(
                ModelName=name,
                ExecutionRoleArn=ROLE,
                PrimaryContainer={"Image": PYTHON_IMAGE, "ModelDataUrl": "s3://models/bench/model.tar.gz"},
            )
            sm.create_endpoint_config(
                EndpointConfigName=name,
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": name,
                        "InitialInstanceCount": args.instances,
                        "InstanceType": "ml.m5.large",
                    }
                ],
                **extra,
            )
            sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        for name in ("bench-async", "bench-sync"):
            assert wait_status(sm, name, ("InService", "Failed"))["EndpointStatus"] == "InService"
        body = b"x" * args.small_bytes
        results: dict = {"loadavg_start": os.getloadavg()[0]}
        asyncio.run(sync_small(server.url, 200, 8, body))  # warm-up
        pid = server.proc.pid if server.proc is not None else 0
        cpu0 = tree_cpu(pid)
        results["small_sync"] = asyncio.run(sync_small(server.url, args.small, args.clients, body))
        cpu1 = tree_cpu(pid)
        out_dir = server.data_dir / "buckets" / BUCKET / "out"
        out_dir.mkdir(parents=True, exist_ok=True)
        spy = None
        if args.py_spy:  # the server process only, during the async phase (what its CPU goes to)
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "-p",
                    str(pid),
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    str(args.py_spy),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
        results["small_async"] = asyncio.run(
            async_small(
                server.url, args.small, args.clients, body, out_dir, args.accept_load, server.data_dir / "modelhost.db"
            )
        )
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        cpu2 = tree_cpu(pid)
        # server-side CPU per request (the server and its instances): load-independent, unlike req/s
        results["small_sync"]["cpu_ms"] = per_request_ms(cpu0, cpu1, args.small)
        results["small_async"]["cpu_ms"] = per_request_ms(cpu1, cpu2, args.small)
        results["loadavg_end"] = os.getloadavg()[0]
        if args.large:
            results["large_async"] = large(server, rt, args.large, args.large_mb)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    s, a = results["small_sync"], results["small_async"]
    results["drain_over_sync"] = a["rps"] / s["rps"]
    return results


def report(args: argparse.Namespace, where: str, results: dict) -> None:
    s, a = results["small_sync"], results["small_async"]
    print(
        f"\nmodelhost from {where}: {args.small} requests of {args.small_bytes} B, {args.clients} clients, "
        f"{args.instances} instance(s), async concurrency {args.concurrency}"
    )
    print(f"{'mode':<8}{'req/s':>9}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}   notes")
    print(
        f"{'sync':<8}{s['rps']:>9.0f}{s['p50_ms']:>10.1f}{s['p99_ms']:>10.1f}{s['errors']:>8}   InvokeEndpoint latency"
    )
    print(
        f"{'async':<8}{a['rps']:>9.0f}{a['queue_p50_ms']:>10.1f}{a['queue_p99_ms']:>10.1f}{a['errors']:>8}   "
        f"202 -> output written (queue latency); accept p50 {a['accept_p50_ms']:.1f} ms, "
        f"p99 {a['accept_p99_ms']:.1f} ms; submitted at {a['submit_rps']:.0f} req/s ({a['load']})"
    )
    for mode, r in (("sync", s), ("async", a)):
        print(
            f"CPU per request, {mode}: server {r['cpu_ms']['server']:.2f} ms "
            f"(system {r['cpu_ms']['server_system']:.2f} ms), "
            f"instances {r['cpu_ms']['instances']:.2f} ms"
        )
    if "server_accept_rps" in a:
        print(f"accept rate by the server's own receipt times: {a['server_accept_rps']:.0f} req/s")
    print(
        f"accept {a['submit_rps']:.0f} req/s, drain {a['rps']:.0f} req/s, sync {s['rps']:.0f} req/s, "
        f"drain/sync {results['drain_over_sync']:.2f}; load average {results['loadavg_end']:.2f} "
        f"(at start {results['loadavg_start']:.2f}); server on CPU {args.server_cpus or 'any'}, "
        f"load generator on CPU {args.client_cpus or 'any'}"
    )
    if "large_async" in results:
        g = results["large_async"]
        print(
            f"\n{g['requests']} requests of {g['payload_mb']} MB (echoed): {g['rps']:.2f} req/s, "
            f"{g['mb_per_s']:.0f} MB/s in+out, queue latency p50 {g['queue_p50_s']:.1f} s, "
            f"max {g['queue_max_s']:.1f} s"
        )
        print(
            f"server RSS: start {g['server_rss_start_mb']:.0f} MB, peak {g['server_rss_peak_mb']:.0f} MB "
            f"(+{g['server_rss_growth_mb']:.0f} MB); sync: n/a (InvokeEndpoint limit 6 MB)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=10000, help="number of small requests")
    ap.add_argument("--small-bytes", type=int, default=100)
    ap.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients for the small phase")
    ap.add_argument("--large", type=int, default=20, help="number of large requests (0 skips)")
    ap.add_argument("--large-mb", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=4, help="MaxConcurrentInvocationsPerInstance")
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument(
        "--server-cpus", default="0", help="CPUs the server and its instances are pinned to ('' = unpinned)"
    )
    ap.add_argument("--client-cpus", default="1", help="CPUs this load generator is pinned to ('' = unpinned)")
    ap.add_argument(
        "--src",
        type=Path,
        action="append",
        default=[],
        help="also run a modelhost server from this src/ directory, first (repeatable; before/after in one sitting)",
    )
    ap.add_argument("--rounds", type=int, default=1, help="runs of every server, alternating")
    ap.add_argument(
        "--data-root", type=Path, default=None, help="where the server's data dir goes (default: the temp dir)"
    )
    ap.add_argument(
        "--accept-load",
        choices=("wrk", "aiohttp"),
        default="wrk" if shutil.which("wrk") else "aiohttp",
        help="the async accept phase's load generator (default wrk where installed: aiohttp on one core caps "
        "at ~2,800 req/s); the sync phase uses aiohttp",
    )
    ap.add_argument("--py-spy", type=Path, default=None, help="py-spy record (raw) the server during the async phase")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "async.json")
    args = ap.parse_args()
    if args.client_cpus:
        psutil.Process().cpu_affinity(cpus(args.client_cpus))
    sources = [source_env(src) for src in [*args.src, None]]
    root = args.data_root or Path(tempfile.gettempdir())
    out: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg": os.getloadavg()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": [],
    }
    out["args"]["src"] = [str(p) for p in args.src]
    for rnd in range(args.rounds):
        for env, where in sources:
            fs_us = file_create_us(root)
            results = run_one(args, env)
            results.update({"modelhost": where, "round": rnd, "file_create_us": fs_us})
            out["runs"].append(results)
            report(args, where, results)
            print(
                f"file system: {fs_us:.0f} us to create, write and rename one 100 B file under {root} "
                "(measured just before)"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
