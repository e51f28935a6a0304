"""Batch transform benchmark: a MultiRecord CSV job on the scikit-learn diabetes model over
generated files, against the same model called in-process on the same batches, in the same run;
plus the server's and the instance's peak memory at two input sizes (it should not grow with them).

    .venv/bin/python bench/batch.py [--rows 200000 1000000] [--out bench/results/batch.json]

The in-process baseline does what the instance does per request, without the server: read the
file in MaxPayloadInMB chunks of whole lines, decode them with the runtime's CSV decoder, predict,
encode the predictions as CSV, write them out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import ROLE, SKLEARN_IMAGE, Server, diabetes, sklearn_model  # noqa: E402

PAYLOAD_MB = 6


def make_csv(path: Path, rows: int) -> int:
    x, _ = diabetes()
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        done = 0
        while done < rows:
            n = min(50_000, rows - done)
            block = x[rng.integers(0, len(x), n)] + rng.normal(0, 0.001, (n, x.shape[1]))
            np.savetxt(f, block, delimiter=",", fmt="%.6f")
            done += n
    return path.stat().st_size


def in_process(model: object, path: Path, out: Path) -> dict:
    from modelhost.serving import codecs

    limit = PAYLOAD_MB * 1024 * 1024
    t0 = time.perf_counter()
    rows = 0
    with open(path, "rb") as f, open(out, "wb") as w:
        while True:
            chunk = f.read(limit)
            if not chunk:
                break
            if not chunk.endswith(b"\n"):
                chunk += f.readline()
            data = codecs.decode(chunk, "text/csv")
            pred = model.predict(data)  # type: ignore[attr-defined]
            body, _ = codecs.encode(pred, "text/csv")
            w.write(body)
            rows += len(pred)
    seconds = time.perf_counter() - t0
    return {"rows": rows, "seconds": seconds, "records_per_s": rows / seconds}


class PeakRss:
    """Peak RSS of the server process and of its children (the job's instances), sampled."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.server = 0
        self.instances = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.server = max(self.server, self.proc.memory_info().rss)
                kids = self.proc.children(recursive=True)
                self.instances = max(self.instances, sum(k.memory_info().rss for k in kids if k.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()


def run_job(srv: Server, sm: object, name: str, key: str) -> dict:
    t0 = time.perf_counter()
    sm.create_transform_job(  # type: ignore[attr-defined]
        TransformJobName=name,
        ModelName="bench-skl",
        BatchStrategy="MultiRecord",
        MaxPayloadInMB=PAYLOAD_MB,
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://bench/{key}"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        TransformOutput={"S3OutputPath": "s3://bench/out", "Accept": "text/csv", "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    with PeakRss(srv.proc.pid) as peak:  # type: ignore[union-attr]
        while True:
            desc = sm.describe_transform_job(TransformJobName=name)  # type: ignore[attr-defined]
            if desc["TransformJobStatus"] not in ("InProgress", "Stopping"):
                break
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    log = (srv.data_dir / "logs" / "transform-jobs" / f"{name}.log").read_text()
    # the transform itself (first request to last response), from the job log's per-object line
    line = next(ln for ln in log.splitlines() if " records in " in ln)
    records = int(line.split(": ")[-1].split(" records in ")[0])
    seconds = float(line.split(" records in ")[1].split("s")[0])
    return {
        "rows": records,
        "transform_seconds": seconds,
        "records_per_s": records / seconds,
        "job_wall_seconds_incl_instance_start": wall,
        "server_peak_rss_mb": peak.server / 2**20,
        "instance_peak_rss_mb": peak.instances / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batch.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mh-bench-batch-"))
    srv = Server(tmp / "data", env={"MODELHOST_LOG_LEVEL": "WARNING"}).start()
    results: dict[str, dict] = {}
    try:
        sm, _ = srv.clients()
        data, model = sklearn_model()
        srv.put_object("s3://bench/model.tar.gz", data)
        sm.create_model(
            ModelName="bench-skl",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://bench/model.tar.gz"},
        )
        for rows in args.rows:
            key = f"in-{rows}/data.csv"
            path = srv.data_dir / "buckets" / "bench" / key
            path.parent.mkdir(parents=True, exist_ok=True)
            size = make_csv(path, rows)
            base = in_process(model, path, tmp / "inproc.out")
            job = run_job(srv, sm, f"bench-{rows}", key)
            out = srv.data_dir / "buckets" / "bench" / "out" / "data.csv.out"
            got = np.loadtxt(out, max_rows=1000)
            ref = np.loadtxt(tmp / "inproc.out", max_rows=1000)
            assert np.allclose(got, ref), "the job's output differs from the in-process predictions"
            results[str(rows)] = {
                "input_mb": size / 2**20,
                "in_process": base,
                "job": job,
                "job_vs_in_process": job["records_per_s"] / base["records_per_s"],
            }
            out.unlink()
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "payload_mb": PAYLOAD_MB,
        "results": results,
    }
    print(
        f"{'rows':>9} {'MB':>7} {'in-process rec/s':>17} {'job rec/s':>12} {'ratio':>6} {'server RSS':>11} "
        f"{'instance RSS':>13}"
    )
    for rows, r in results.items():
        print(
            f"{rows:>9} {r['input_mb']:>7.1f} {r['in_process']['records_per_s']:>17,.0f} "
            f"{r['job']['records_per_s']:>12,.0f} {r['job_vs_in_process']:>6.2f} "
            f"{r['job']['server_peak_rss_mb']:>9.0f}MB {r['job']['instance_peak_rss_mb']:>11.0f}MB"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
