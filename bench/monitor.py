"""Model Monitor baseline benchmark: modelhost's analyzer against pandas on the same file, same run.

A CSV of ROWS x 20 columns (16 Fractional, 3 Integral, 1 String; 1 % missing values) is written once;
then, alternating, each side runs as its own process over it: modelhost's analyzer
(``python -m modelhost.monitor``: statistics.json + constraints.json with KLL sketches) and the
reference, pandas ``read_csv`` + ``describe()`` + ``quantile([0.1 .. 0.9])``. Wall time and peak RSS
(ru_maxrss of the child) per side; the median of ``--rounds``. The analyzer also runs pinned to one
core (``taskset -c 0``; pandas is single-threaded) to separate the parser's threads from the rest.

    .venv/bin/python bench/monitor.py [--rows 1000000] [--rounds 3] [--out bench/results/monitor.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PANDAS = """
import sys, pandas as pd
df = pd.read_csv(sys.argv[1])
d = df.describe(include="all")
q = df.select_dtypes("number").quantile([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
print(d.shape, q.shape)
"""


def write_dataset(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    chunk = 100_000
    with path.open("w") as f:
        f.write(",".join([f"f{i}" for i in range(16)] + ["i0", "i1", "i2", "s0"]) + "\n")
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            cols = [np.char.mod("%.6f", rng.normal(i, 1 + i, n)) for i in range(16)]
            cols += [np.char.mod("%d", rng.integers(0, 10**k, n)) for k in (1, 3, 6)]
            cols.append(rng.choice(np.array(["red", "green", "blue", "cyan"]), n))
            table = np.stack(cols, axis=1)
            table[rng.random(table.shape) < 0.01] = ""  # 1 % missing
            f.write("\n".join(",".join(r) for r in table) + "\n")


def measured(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall s, CPU s (user + system, all threads), peak RSS MB) of argv, run under a tiny wrapper process
    that reads its child's rusage. CPU time is the figure that a busy shared machine disturbs least."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter(); r = subprocess.run(sys.argv[1:]); w = time.perf_counter() - t\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps([r.returncode, w, u.ru_utime + u.ru_stime, u.ru_maxrss]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper, *argv], env=env, capture_output=True, text=True)
    code, wall, cpu, rss_kb = json.loads(proc.stdout.strip().splitlines()[-1])
    if code != 0:
        raise RuntimeError(f"{argv[:4]} failed: {proc.stderr[-2000:]}")
    return float(wall), float(cpu), rss_kb / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "monitor.json")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    taskset = shutil.which("taskset")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "in"
        data.mkdir()
        csv = data / "train.csv"
        t = time.perf_counter()
        write_dataset(csv, args.rows)
        print(
            f"dataset: {args.rows} rows x 20 columns, {csv.stat().st_size / 1e6:.0f} MB "
            f"({time.perf_counter() - t:.0f} s to write)"
        )
        analyzer_env = {
            **env,
            "dataset_format": '{"csv": {"header": true, "output_columns_position": "START"}}',
            "dataset_source": str(data),
            "output_path": str(Path(tmp) / "out"),
            "MODELHOST_PROCESSING_ROOT": tmp,
        }
        analyzer = [sys.executable, "-m", "modelhost.monitor"]
        sides: dict[str, list[tuple[float, float, float]]] = {"modelhost": [], "pandas": [], "modelhost_1core": []}
        for _ in range(args.rounds):
            sides["modelhost"].append(measured(analyzer, analyzer_env))
            sides["pandas"].append(measured([sys.executable, "-c", PANDAS, str(csv)], env))
            if taskset:
                sides["modelhost_1core"].append(measured([taskset, "-c", "0", *analyzer], analyzer_env))
        stats = json.loads((Path(tmp) / "out" / "statistics.json").read_text())
        assert stats["dataset"]["item_count"] == args.rows
    results = {
        name: {
            "seconds": statistics.median(w for w, _, _ in runs),
            "cpu_seconds": statistics.median(c for _, c, _ in runs),
            "peak_rss_mb": max(r for _, _, r in runs),
            "runs": [{"seconds": w, "cpu_seconds": c, "peak_rss_mb": r} for w, c, r in runs],
        }
        for name, runs in sides.items()
        if runs
    }
    speedup = results["pandas"]["seconds"] / results["modelhost"]["seconds"]
    cpu_ratio = results["pandas"]["cpu_seconds"] / results["modelhost"]["cpu_seconds"]
    print(f"\nbaseline of {args.rows} x 20 CSV; {os.cpu_count()} CPUs; median of {args.rounds} alternating rounds")
    print(f"{'side':<20}{'seconds':>10}{'CPU s':>10}{'peak RSS MB':>14}")
    for name, r in results.items():
        print(f"{name:<20}{r['seconds']:>10.2f}{r['cpu_seconds']:>10.2f}{r['peak_rss_mb']:>14.0f}")
    print(f"\npandas describe()+quantiles / modelhost analyzer = {speedup:.2f}x wall, {cpu_ratio:.2f}x CPU")
    print("(goal >= 5x, peak RSS < 300 MB)")
    if "modelhost_1core" in results:
        print(f"pinned to one core: {results['pandas']['seconds'] / results['modelhost_1core']['seconds']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "rows": args.rows,
                "placement": "each side a separate process, unpinned (the OS places it; pyarrow's CSV reader "
                "uses its thread pool); modelhost_1core: taskset -c 0",
                "results": results,
                "speedup_vs_pandas": speedup,
                "cpu_ratio_vs_pandas": cpu_ratio,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
