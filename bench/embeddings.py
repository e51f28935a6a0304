"""Embedding endpoint benchmark (workload B of issue 15): the packaged all-MiniLM-L6-v2
(sentence-transformers) served through the Hugging Face runtime (HF_TASK=sentence-embeddings), with and
without dynamic batching, against the same model called in-process at batch 1, 8 and 32, in the same run.

    .venv/bin/python bench/embeddings.py [--seconds 5] [--pin] [--out bench/results/embeddings.json]

--pin: the server and all its processes on CPU 0 (``sched_setaffinity`` on every thread of the server right
after it starts; instances inherit it), the in-process reference on CPU 0 too, and the load generator (this
process: an aiohttp closed loop, bench/realtime.py ``load``) on CPU 1. torch runs 1 thread everywhere
(OMP_NUM_THREADS=1, torch.set_num_threads(1)). Batching: SAGEMAKER_TS_BATCH_SIZE=32,
SAGEMAKER_TS_MAX_BATCH_DELAY=10 (ms). "server CPU ms/req": user+system CPU of the server and its
instances during the phase, per request.
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import ROLE, Server, tarball, wait_status  # noqa: E402

from bench.realtime import load, pin_process, print_table  # noqa: E402

HF_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
    "huggingface-pytorch-inference:2.1.0-transformers4.37.0-cpu-py310-ubuntu22.04"
)
SENTENCE = "modelhost serves SageMaker models on one machine."
BATCHING = {"SAGEMAKER_TS_BATCH_SIZE": "32", "SAGEMAKER_TS_MAX_BATCH_DELAY": "10"}


def model_dir() -> Path:
    from tests.hf_models import minilm_dir

    return minilm_dir()


def in_process(seconds: float, batch: int) -> dict:
    """items/s of ``encode`` on ``batch`` sentences per call, JSON of each embedding included."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    model = SentenceTransformer(str(model_dir()), device="cpu")
    sentences = [SENTENCE] * batch if batch > 1 else SENTENCE
    model.encode(sentences)
    lat = []
    cpu0 = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        out = model.encode(sentences)
        for row in out if batch > 1 else [out]:
            json.dumps({"embeddings": row.tolist()})
        lat.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    lat.sort()
    return {
        "requests": len(lat) * batch,
        "errors": 0,
        "rps": len(lat) * batch / sum(lat),  # items/s
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
        "cpu_ms_per_req": cpu * 1e3 / (len(lat) * batch),
    }


def _cpu_seconds(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measured(server: Server, url: str, body: bytes, conc: int, seconds: float) -> dict:
    assert server.proc is not None
    before = _cpu_seconds(server.proc.pid)
    result: dict[str, Any] = asyncio.run(load(url, body, conc, seconds, content_type="application/json"))
    used = _cpu_seconds(server.proc.pid) - before
    result["cpu_ms_per_req"] = used * 1e3 / max(result["requests"] + 50, 1)  # the 50 warm-up requests too
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


def run(seconds: float, pinned: bool = False, concurrency: tuple[int, ...] = (1, 16, 64)) -> tuple[dict, dict]:
    """(results, ratios) of the MiniLM endpoints (batching off and on) against the model in-process."""
    os.environ["OMP_NUM_THREADS"] = "1"
    if pinned:
        pin_process(os.getpid(), {0})
    results = {f"in_process_batch{b}": in_process(seconds, b) for b in (1, 8, 32)}
    if pinned:
        pin_process(os.getpid(), {1})
    body = json.dumps({"inputs": SENTENCE}).encode()
    from tests.hf_models import dir_files

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
            for name, label in (("minilm", "modelhost"), ("minilm-batched", "modelhost_batched")):
                url = f"{server.url}/endpoints/{name}/invocations"
                for conc in concurrency:
                    results[f"{label}_c{conc}"] = measured(server, url, body, conc, seconds)
        finally:
            server.stop()
    ip = results["in_process_batch1"]["rps"]
    ratios = {
        "unbatched_c1_vs_in_process": results["modelhost_c1"]["rps"] / ip,
        "batched_c1_vs_unbatched_c1": results["modelhost_batched_c1"]["rps"] / results["modelhost_c1"]["rps"],
        "batched_c16_vs_in_process_batch8": results["modelhost_batched_c16"]["rps"]
        / results["in_process_batch8"]["rps"],
        "batched_c64_vs_in_process_batch32": results["modelhost_batched_c64"]["rps"]
        / results["in_process_batch32"]["rps"],
        "hf_cpu_overhead_ms_per_req_c1": results["modelhost_c1"]["cpu_ms_per_req"]
        - results["in_process_batch1"]["cpu_ms_per_req"],
    }
    return results, ratios


def print_results(results: dict, ratios: dict) -> None:
    print_table(results)
    print(f"\n{'target':<26}{'server CPU ms/req':>18}")
    for name, r in results.items():
        print(f"{name:<26}{r.get('cpu_ms_per_req', float('nan')):>18.2f}")
    print()
    for k, v in ratios.items():
        print(f"{k:<40}{v:>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--pin", action="store_true", help="server on CPU 0, load generator on CPU 1")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "embeddings.json")
    args = ap.parse_args()
    results, ratios = run(args.seconds, args.pin)
    print(f"\nall-MiniLM-L6-v2 embeddings, one sentence per request; {os.cpu_count()} CPUs; pinned: {args.pin}")
    print_results(results, ratios)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "pinned": args.pin,
                "seconds": args.seconds,
                "batching": BATCHING,
                "results": results,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
