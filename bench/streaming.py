"""Response streaming benchmark: time to first token (TTFT) and tokens/s of a small text-generation
model (GPT-2 shaped, random weights, built locally: tests/hf_models.py ``gpt2``) streamed through
InvokeEndpointWithResponseStream, against the same model streaming in-process (``generate`` on a
thread with transformers' TextIteratorStreamer, no modelhost code), requests of the two alternated one
by one in the same run. Also a user generator predict_fn (no model: pure platform cost).

    .venv/bin/python bench/streaming.py [--requests 20] [--tokens 32] [--pin] [--out bench/results/streaming.json]

--pin: server and instances on CPU 0, the in-process reference on CPU 0, the client (this process,
boto3) on CPU 1. TTFT through modelhost = request sent -> first PayloadPart frame read (raw HTTP; boto3 also shown).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import PYTHON_IMAGE, ROLE, Server, tarball, wait_status  # noqa: E402

from bench.realtime import pin_process  # noqa: E402

HF_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:"
    "2.1.0-transformers4.37.0-cpu-py310-ubuntu22.04"
)
GENERATOR_CODE = """
def model_fn(model_dir):
    return None

def input_fn(data, content_type):
    return int(data)

def predict_fn(n, model):
    return (f"chunk {i}\\n" for i in range(n))
"""
PROMPT = "hello world"


def params(tokens: int) -> dict[str, Any]:
    # random weights: keep special tokens out so every step yields text
    return {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False, "suppress_tokens": [0, 1, 2, 3, 4]}


def summary(ttft: list[float], total: list[float], tokens: int) -> dict[str, float]:
    return {
        "ttft_p50_ms": statistics.median(ttft) * 1e3,
        "ttft_min_ms": min(ttft) * 1e3,
        "tokens_per_s": tokens / statistics.median(total),
        "total_p50_ms": statistics.median(total) * 1e3,
        "requests": len(ttft),
    }


class InProcess:
    """The model's own first token: ``generate`` on a thread with transformers' ``TextIteratorStreamer``
    (what a hand-written streaming server does), no modelhost code."""

    def __init__(self, model_dir: Path, tokens: int) -> None:
        import torch
        from transformers import pipeline

        torch.set_num_threads(1)
        self.pipe = pipeline("text-generation", model=str(model_dir), device="cpu")
        self.params = params(tokens)

    def one(self) -> tuple[float, float]:
        """(time to the first non-empty text, total) of one generation."""
        import threading

        from transformers import TextIteratorStreamer

        t0 = time.perf_counter()
        tok, model = self.pipe.tokenizer, self.pipe.model
        encoded = tok(PROMPT, return_tensors="pt")
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        thread = threading.Thread(target=model.generate, kwargs={**encoded, **self.params, "streamer": streamer})
        thread.start()
        first = None
        for text in streamer:
            if text and first is None:
                first = time.perf_counter()
        thread.join()
        return (first or time.perf_counter()) - t0, time.perf_counter() - t0


class RawStream:
    """One keep-alive connection to the streaming route; request sent -> first whole PayloadPart frame
    read (raw HTTP, so the figure is the server's, not boto3's parsing)."""

    def __init__(self, url: str, endpoint: str, body: bytes) -> None:
        import http.client
        from urllib.parse import urlparse

        host = urlparse(url)
        self.conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
        self.path = f"/endpoints/{endpoint}/invocations-response-stream"
        self.body = body

    def one(self) -> tuple[float, float]:
        import struct

        t0 = time.perf_counter()
        self.conn.request("POST", self.path, body=self.body, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        assert resp.status == 200, resp.read()
        prelude = resp.read(12)
        resp.read(struct.unpack(">I", prelude[:4])[0] - 12)
        first = time.perf_counter()
        resp.read()
        return first - t0, time.perf_counter() - t0


def interleaved(ref: InProcess, raw: RawStream, requests: int, tokens: int, pinned: bool) -> dict[str, Any]:
    """In-process and modelhost requests alternated one by one (the in-process one on CPU 0, the
    client on CPU 1), so both see the same load; plus the median of the per-pair TTFT differences."""
    pairs = []
    for i in range(requests + 2):
        if pinned:
            pin_process(os.getpid(), {0})
        a = ref.one()
        if pinned:
            pin_process(os.getpid(), {1})
        b = raw.one()
        if i >= 2:
            pairs.append((a, b))
    return {
        "in_process": summary([a[0] for a, _ in pairs], [a[1] for a, _ in pairs], tokens),
        "modelhost": summary([b[0] for _, b in pairs], [b[1] for _, b in pairs], tokens),
        "ttft_over_pairwise_p50_ms": statistics.median((b[0] - a[0]) * 1e3 for a, b in pairs),
    }


def through_boto3(rt: Any, endpoint: str, body: bytes, requests: int, tokens: int) -> dict[str, float]:
    ttft, total = [], []
    for _ in range(requests + 2):
        t0 = time.perf_counter()
        resp = rt.invoke_endpoint_with_response_stream(EndpointName=endpoint, ContentType="application/json", Body=body)
        first = None
        for _event in resp["Body"]:
            first = first or time.perf_counter()
        ttft.append((first or time.perf_counter()) - t0)
        total.append(time.perf_counter() - t0)
    return summary(ttft[2:], total[2:], tokens)


def run(requests: int = 20, tokens: int = 32, pin: bool = False) -> dict[str, Any]:
    """Both endpoints deployed on a fresh server, every case measured; the figures (see ``main``)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    from tests.hf_models import dir_files, gpt2

    results: dict[str, dict[str, float]] = {}
    load_start = " ".join(f"{v:.2f}" for v in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = gpt2(Path(tmp) / "gpt2")
        ref = InProcess(model_dir, tokens)
        if pin:
            pin_process(os.getpid(), {1})
        server = Server(Path(tmp) / "data", env={"OMP_NUM_THREADS": "1"})
        try:
            server.start()
            assert server.proc is not None
            if pin:
                pin_process(server.proc.pid, {0})
            server.put_object("s3://bench/gpt2.tar.gz", tarball(dir_files(model_dir)))
            server.put_object("s3://bench/gen.tar.gz", tarball({"code/inference.py": GENERATOR_CODE}))
            sm, rt = server.clients()
            for name, container in (
                ("gen", {"Image": HF_IMAGE, "ModelDataUrl": "s3://bench/gpt2.tar.gz"}),
                ("chunks", {"Image": PYTHON_IMAGE, "ModelDataUrl": "s3://bench/gen.tar.gz"}),
            ):
                if name == "gen":
                    container["Environment"] = {"HF_TASK": "text-generation"}  # type: ignore[assignment]
                sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=container)
                sm.create_endpoint_config(
                    EndpointConfigName=name,
                    ProductionVariants=[
                        {
                            "VariantName": "AllTraffic",
                            "ModelName": name,
                            "InitialInstanceCount": 1,
                            "InstanceType": "ml.m5.large",
                        }
                    ],
                )
                sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
            for name in ("gen", "chunks"):
                assert wait_status(sm, name, ("InService", "Failed"), timeout=300)["EndpointStatus"] == "InService"
            body = json.dumps({"inputs": PROMPT, "parameters": params(tokens), "stream": True}).encode()
            both = interleaved(ref, RawStream(server.url, "gen", body), requests, tokens, pin)
            results["in_process"], results["modelhost"] = both["in_process"], both["modelhost"]
            pairwise = both["ttft_over_pairwise_p50_ms"]
            results["modelhost_boto3"] = through_boto3(rt, "gen", body, requests, tokens)
            chunks = RawStream(server.url, "chunks", str(tokens).encode())
            runs = [chunks.one() for _ in range(requests + 2)][2:]
            results["modelhost_generator_fn"] = summary([r[0] for r in runs], [r[1] for r in runs], tokens)
        finally:
            server.stop()
    gen = results["modelhost_generator_fn"]
    return {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "pinned": pin,
        "tokens": tokens,
        "results": results,
        "ttft_over_in_process_ms": results["modelhost"]["ttft_p50_ms"] - results["in_process"]["ttft_p50_ms"],
        "ttft_over_pairwise_p50_ms": pairwise,
        "generator_fn_us_per_chunk": (gen["total_p50_ms"] - gen["ttft_p50_ms"]) * 1e3 / max(tokens - 1, 1),
        "loadavg": [load_start, " ".join(f"{v:.2f}" for v in os.getloadavg())],
    }


def print_figures(figures: dict[str, Any]) -> None:
    print(
        f"\nstreaming {figures['tokens']} tokens, GPT-2 shaped random model; {figures['cpus']} CPUs; "
        f"pinned: {figures['pinned']}"
    )
    print(f"load average {figures['loadavg'][0]} -> {figures['loadavg'][1]}")
    print(f"{'target':<26}{'TTFT p50 ms':>12}{'TTFT min ms':>12}{'tokens/s':>10}")
    for name, r in figures["results"].items():
        print(f"{name:<26}{r['ttft_p50_ms']:>12.2f}{r['ttft_min_ms']:>12.2f}{r['tokens_per_s']:>10.1f}")
    print(
        f"\nTTFT over the in-process first token: p50 {figures['ttft_over_in_process_ms']:.2f} ms, "
        "median of alternated pairs"
    )
    print(f"{figures['ttft_over_pairwise_p50_ms']:.2f} ms (goal <= 10 ms)")
    print(
        "platform cost per streamed chunk after the first (user generator predict_fn, no model): "
        f"{figures['generator_fn_us_per_chunk']:.0f} us"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--pin", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "streaming.json")
    args = ap.parse_args()
    figures = run(args.requests, args.tokens, args.pin)
    print_figures(figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
