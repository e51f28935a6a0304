"""The instance alone (issue 15, §1 and §2): what the model-serving process costs per request beyond
the model, without the front door, before/after in one sitting.

Each ``--src`` (and this checkout) starts one ``python -m modelhost.serving.worker`` on a unix socket
on CPU 0; the load generator (this process: uvloop, ``--conc`` closed-loop clients sending raw
HTTP/1.1, the router's request shape) runs on CPU 1. Rounds interleave the sources; each phase
reports req/s, p50 and the instance's CPU per request (user+system from /proc, system part shown).

Models (``--model``): ``sklearn`` (workload A: LinearRegression(load_diabetes), one CSV row),
``stub`` (the same request through the python runtime to a model answering a constant: the wire,
the handler chain and the codecs only), ``minilm`` (workload B: the packaged all-MiniLM-L6-v2
through the Hugging Face runtime) and ``minilm-stub`` (the same runtime with ``encode`` answering a
4-float embedding: everything but the model). ``--batch`` sets SAGEMAKER_TS_BATCH_SIZE=32,
SAGEMAKER_TS_MAX_BATCH_DELAY=10.

    .venv/bin/python bench/instance.py --model minilm-stub --batch --conc 64 --src /tmp/before/src
    (git archive <commit> src | tar -x -C /tmp/before)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENTENCE = "modelhost serves SageMaker models on one machine."
BATCHING = {"SAGEMAKER_TS_BATCH_SIZE": "32", "SAGEMAKER_TS_MAX_BATCH_DELAY": "10"}
STUB_SKLEARN = """import numpy as np
class Constant:
    def predict(self, x):
        return np.array([float(x.shape[1])])
def model_fn(model_dir):
    return Constant()
"""
STUB_MINILM = """import numpy as np
from modelhost.serving.runtimes.huggingface import model_fn as hf_model_fn
def model_fn(model_dir):
    pipeline = hf_model_fn(model_dir)
    e = np.array([0.25, 0.5, 0.75, 1.0], dtype=np.float32)
    pipeline.model.encode = lambda inputs, **kw: np.stack([e] * len(inputs)) if isinstance(inputs, list) else e
    return pipeline
"""


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user+system, system) seconds of ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, int(fields[12]) / tick


def prepare(model: str, tmp: Path, batch: bool) -> tuple[Path, dict[str, str], bytes]:
    """(model dir, instance environment, request) for ``model``."""
    env = {"OMP_NUM_THREADS": "1", **(BATCHING if batch else {})}
    if model.startswith("minilm"):
        from tests.hf_models import minilm_dir

        model_dir = minilm_dir()
        env.update(MODELHOST_RUNTIME="huggingface", HF_TASK="sentence-embeddings")
        if model == "minilm-stub":
            model_dir = tmp / "minilm"
            shutil.copytree(minilm_dir(), model_dir, symlinks=True)
            (model_dir / "code").mkdir(exist_ok=True)
            (model_dir / "code" / "inference.py").write_text(STUB_MINILM)
        body, content_type = json.dumps({"inputs": SENTENCE}).encode(), b"application/json"
    else:
        import joblib
        from tests.helpers import csv_row, diabetes, sklearn_model

        model_dir = tmp / "sklearn"
        model_dir.mkdir()
        _, estimator = sklearn_model()
        joblib.dump(estimator, model_dir / "model.joblib")
        env["MODELHOST_RUNTIME"] = "sklearn"
        if model == "stub":
            (model_dir / "code").mkdir()
            (model_dir / "code" / "inference.py").write_text(STUB_SKLEARN)
            env["MODELHOST_RUNTIME"] = "python"
        x, _ = diabetes()
        body, content_type = csv_row(x[0]).encode(), b"text/csv"
    request = (
        b"POST /invocations HTTP/1.1\r\nhost: instance\r\ncontent-type: %s\r\naccept: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (content_type, len(body), body)
    )
    return model_dir, env, request


async def closed_loop(uds: str, request: bytes, conc: int, seconds: float) -> tuple[int, float]:
    """(requests answered, p50 seconds) of ``conc`` clients on their own connections."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_unix_connection(uds)
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"the instance answered {head!r}")
            at = head.lower().index(b"content-length:") + 15
            await reader.readexactly(int(head[at : head.index(b"\r\n", at)]))
            latencies.append(time.perf_counter() - t0)
        writer.close()

    await asyncio.gather(*(client() for _ in range(conc)))
    latencies.sort()
    return len(latencies), latencies[len(latencies) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("sklearn", "stub", "minilm", "minilm-stub"), default="stub")
    ap.add_argument("--batch", action="store_true", help="dynamic batching: 32 per batch, 10 ms")
    ap.add_argument("--conc", type=int, nargs="+", default=[1, 16], help="closed-loop clients per phase")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--src", type=Path, action="append", default=[], help="another checkout's src/ (repeatable)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "instance.json")
    args = ap.parse_args()
    import uvloop

    sources = [str(s.resolve()) for s in args.src] + [str(ROOT / "src")]
    tmp = Path(tempfile.mkdtemp(prefix="mh-instance-bench-"))
    model_dir, env, request = prepare(args.model, tmp, args.batch)
    workers: list[tuple[str, str, subprocess.Popen[bytes]]] = []
    try:
        for i, src in enumerate(sources):
            uds = str(tmp / f"instance-{i}.sock")
            cmd = [sys.executable, "-m", "modelhost.serving.worker", "--uds", uds, "--model-dir", str(model_dir)]
            proc = subprocess.Popen(
                ["taskset", "-c", "0", *cmd], env={**os.environ, **env, "PYTHONPATH": src}, stdout=subprocess.DEVNULL
            )
            workers.append((src, uds, proc))
        os.sched_setaffinity(0, {1})
        for _, uds, proc in workers:
            deadline = time.monotonic() + 300
            while not os.path.exists(uds):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the instance on {uds} did not start")
                time.sleep(0.1)
            uvloop.run(closed_loop(uds, request, 4, 1.0))  # warm-up (and past the quick-model streak)
        rounds: list[dict] = []
        for _ in range(args.rounds):
            phases: dict[str, dict] = {}
            for src, uds, proc in workers:
                for conc in args.conc:
                    load = os.getloadavg()[0]
                    cpu0, sys0 = cpu_seconds(proc.pid)
                    t0 = time.perf_counter()
                    n, p50 = uvloop.run(closed_loop(uds, request, conc, args.seconds))
                    elapsed = time.perf_counter() - t0
                    cpu1, sys1 = cpu_seconds(proc.pid)
                    phases[f"{src} c={conc}"] = {
                        "src": src,
                        "conc": conc,
                        "rps": n / elapsed,
                        "p50_ms": p50 * 1e3,
                        "cpu_ms_per_req": (cpu1 - cpu0) * 1e3 / n,
                        "sys_ms_per_req": (sys1 - sys0) * 1e3 / n,
                        "load_average": load,
                    }
            rounds.append(phases)
    finally:
        for _, _, proc in workers:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\ninstance alone, model {args.model}, batching {'32 / 10 ms' if args.batch else 'off'}; "
        f"instance on CPU 0, load generator on CPU 1; {args.rounds} rounds x {args.seconds:g} s, interleaved"
    )
    print(f"{'source':<40}{'conc':>5}   per round: req/s, p50 ms, instance CPU ms/req (system), load")
    for key in rounds[0]:
        cells = [
            f"{p['rps']:.0f}, {p['p50_ms']:.3f}, {p['cpu_ms_per_req']:.4f} ({p['sys_ms_per_req']:.3f}),"
            f" {p['load_average']:.2f}"
            for p in (r[key] for r in rounds)
        ]
        first = rounds[0][key]
        print(f"{first['src'][-39:]:<40}{first['conc']:>5}   " + " | ".join(cells))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "placement": "instance on CPU 0 (taskset), load generator on CPU 1",
                "model": args.model,
                "batching": BATCHING if args.batch else None,
                "seconds": args.seconds,
                "rounds": rounds,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
