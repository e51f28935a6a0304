"""Serverless cold starts against the model's own load time, and the warm overhead, same run.

Per model (scikit-learn LinearRegression, spaCy en_core_web_sm, the packaged all-MiniLM-L6-v2):

* ``load_p50``: the model load measured in-process — a fresh Python that has already imported the
  framework times only ``joblib.load`` / ``spacy.load`` / ``SentenceTransformer(dir)`` (+ one call);
* ``cold_p50``: a serverless endpoint scaled to zero, the client's latency of the request that
  cold-starts it (forked from the runtime's template); the goal is ``cold_p50 <= load_p50 + 0.3 s``;
* ``cold_no_template_p50``: the same with a plain ``python -m`` instance (the model's environment sets
  ``OMP_NUM_THREADS``, which is read at import time, so the template is not used) — for reference.

Warm: the sklearn model behind a serverless endpoint and an instance-based endpoint, 1 client, p50.
Everything runs on this machine's cores as the OS places it (server, instances and client share them).

    .venv/bin/python bench/serverless.py [--rounds 5] [--out bench/results/serverless.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import ROLE, SKLEARN_IMAGE, Server, csv_row, diabetes, sklearn_model  # noqa: E402
from tests.hf_models import minilm_dir  # noqa: E402
from tests.integration.test_runtimes import SPACY_IMAGE, SPACY_TEXT, spacy_pipeline_files  # noqa: E402

from bench.realtime import load  # noqa: E402

HF_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:2.1-transformers4.37-cpu-py310"

LOADERS = {
    "sklearn": (
        "import joblib, numpy as np, sklearn.linear_model",
        "m = joblib.load(D + '/model.joblib'); m.predict(np.zeros((1, 10)))",
    ),
    "spacy": ("import spacy", "nlp = spacy.load(D + '/model-last'); nlp('Apple is buying a startup')"),
    "minilm": (
        "import torch, sentence_transformers",
        "m = sentence_transformers.SentenceTransformer(D, device='cpu'); m.encode('hello')",
    ),
}


def in_process_load(kind: str, model_dir: Path, rounds: int) -> float:
    """p50 seconds of the model load alone, each in a fresh interpreter with the framework imported."""
    imports, work = LOADERS[kind]
    code = f"{imports}\nimport time\nD = {str(model_dir)!r}\nt = time.perf_counter()\n{work}\n"
    code += "print(time.perf_counter() - t)"
    times = [float(subprocess.check_output([sys.executable, "-c", code], text=True).split()[-1]) for _ in range(rounds)]
    return statistics.median(times)


def write_tar(path: Path, root: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                tar.add(f, arcname=str(f.relative_to(root)))


def instances(server: Server, endpoint: str) -> float:
    text = urllib.request.urlopen(f"{server.url}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith("modelhost_serverless_instances{") and f'endpoint="{endpoint}"' in line:
            return float(line.split()[-1])
    return 0.0


def cold_starts(server: Server, rt: Any, endpoint: str, body: bytes, content_type: str, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        deadline = time.monotonic() + 60
        while instances(server, endpoint) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{endpoint} did not scale to zero")
            time.sleep(0.2)
        t = time.perf_counter()
        rt.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType=content_type)["Body"].read()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0, help="warm measurement per endpoint")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serverless.json")
    args = ap.parse_args()
    x, _ = diabetes()
    row = csv_row(x[0]).encode()
    results: dict[str, Any] = {"models": {}, "warm": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        sk_dir, sp_dir = tmpdir / "sk", tmpdir / "sp"
        sk_dir.mkdir()
        sk_tar, _ = sklearn_model()
        (tmpdir / "sk.tar.gz").write_bytes(sk_tar)
        with tarfile.open(tmpdir / "sk.tar.gz") as tar:
            tar.extractall(sk_dir, filter="data")
        for name, data in spacy_pipeline_files().items():
            (sp_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (sp_dir / name).write_bytes(data if isinstance(data, bytes) else data.encode())
        write_tar(tmpdir / "sp.tar.gz", sp_dir)
        write_tar(tmpdir / "minilm.tar.gz", minilm_dir())
        models = {
            "sklearn": (SKLEARN_IMAGE, "sk", sk_dir, {}, row, "text/csv"),
            "spacy": (SPACY_IMAGE, "sp", sp_dir, {}, json.dumps({"text": SPACY_TEXT}).encode(), "application/json"),
            "minilm": (
                HF_IMAGE,
                "minilm",
                minilm_dir(),
                {"HF_TASK": "sentence-embeddings"},
                json.dumps({"inputs": "hello world"}).encode(),
                "application/json",
            ),
        }
        server = Server(
            tmpdir / "data", env={"MODELHOST_SERVERLESS_IDLE_SECONDS": "1", "MODELHOST_RECONCILE_INTERVAL": "0.2"}
        )
        try:
            server.start()
            sm, rt = server.clients(read_timeout=300)
            for kind, (image, key, _d, env, body, ctype) in models.items():
                server.put_object(f"s3://bench/{key}.tar.gz", (tmpdir / f"{key}.tar.gz").read_bytes())
                for suffix, extra in (("", {}), ("-plain", {"OMP_NUM_THREADS": "2"})):
                    name = f"{key}{suffix}"
                    container = {
                        "Image": image,
                        "ModelDataUrl": f"s3://bench/{key}.tar.gz",
                        "Environment": {**env, **extra},
                    }
                    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=container)
                    sm.create_endpoint_config(
                        EndpointConfigName=name,
                        ProductionVariants=[
                            {
                                "VariantName": "AllTraffic",
                                "ModelName": name,
                                "ServerlessConfig": {"MemorySizeInMB": 3072, "MaxConcurrency": 1},
                            }
                        ],
                    )
                    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
                    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1})
                time.sleep(3)  # the template imports its framework once, ahead of the first cold start
                # The reference is measured right before the cold starts: the same moment of a shared machine.
                loads = {kind: in_process_load(kind, models[kind][2], args.rounds)}
                cold = cold_starts(server, rt, key, body, ctype, args.rounds)
                plain = cold_starts(server, rt, f"{key}-plain", body, ctype, max(2, args.rounds // 2))
                results["models"][kind] = {
                    "load_p50_s": loads[kind],
                    "cold_p50_s": statistics.median(cold),
                    "cold_no_template_p50_s": statistics.median(plain),
                    "cold_minus_load_s": statistics.median(cold) - loads[kind],
                    "cold_s": cold,
                }
            # Warm overhead: the serverless sklearn endpoint against an instance-based one.
            sm.create_endpoint_config(
                EndpointConfigName="sk-inst",
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": "sk",
                        "InitialInstanceCount": 1,
                        "InstanceType": "ml.m5.large",
                    }
                ],
            )
            sm.create_endpoint(EndpointName="sk-inst", EndpointConfigName="sk-inst")
            sm.get_waiter("endpoint_in_service").wait(EndpointName="sk-inst", WaiterConfig={"Delay": 1})
            for name in ("sk-inst", "sk"):
                results["warm"][name] = asyncio.run(
                    load(f"{server.url}/endpoints/{name}/invocations", row, 1, args.seconds)
                )
        finally:
            server.stop()
    warm = results["warm"]
    results["warm_ratio_p50"] = warm["sk"]["p50_ms"] / warm["sk-inst"]["p50_ms"]
    print(f"\nserverless cold starts ({os.cpu_count()} CPUs, shared; {args.rounds} rounds, p50 seconds)")
    print(f"{'model':<10}{'load':>10}{'cold':>10}{'cold-load':>11}{'no template':>13}{'goal met':>10}")
    for kind, r in results["models"].items():
        met = r["cold_p50_s"] <= r["load_p50_s"] + 0.3
        print(
            f"{kind:<10}{r['load_p50_s']:>10.3f}{r['cold_p50_s']:>10.3f}{r['cold_minus_load_s']:>11.3f}"
            f"{r['cold_no_template_p50_s']:>13.3f}{'yes' if met else 'no':>10}"
        )
    print(
        f"\nwarm sklearn p50: instance-based {warm['sk-inst']['p50_ms']:.3f} ms, "
        f"serverless {warm['sk']['p50_ms']:.3f} ms (ratio {results['warm_ratio_p50']:.2f})"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), **results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
