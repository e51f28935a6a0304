"""Latency added by a shadow variant: the same endpoint with and without a shadow, same run.

Both endpoints serve a scikit-learn LinearRegression (load_diabetes); the shadowed one copies
every request (shadow weight = production weight) to a second fleet of the same model.

    .venv/bin/python bench/shadow.py [--seconds 5] [--out bench/results/shadow.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import ROLE, SKLEARN_IMAGE, Server, csv_row, diabetes, sklearn_model, wait_status  # noqa: E402

from bench.realtime import load, print_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "shadow.json")
    args = ap.parse_args()
    tarball, _ = sklearn_model()
    x, _ = diabetes()
    body = csv_row(x[0]).encode()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data")
        try:
            server.start()
            server.put_object("s3://bench/model.tar.gz", tarball)
            sm, _ = server.clients()
            sm.create_model(
                ModelName="m",
                ExecutionRoleArn=ROLE,
                PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://bench/model.tar.gz"},
            )
            variant = {"ModelName": "m", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
            sm.create_endpoint_config(
                EndpointConfigName="plain", ProductionVariants=[{"VariantName": "live", **variant}]
            )
            sm.create_endpoint_config(
                EndpointConfigName="shadowed",
                ProductionVariants=[{"VariantName": "live", **variant}],
                ShadowProductionVariants=[{"VariantName": "shadow", **variant}],
            )
            for name in ("plain", "shadowed"):
                sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
            for name in ("plain", "shadowed"):
                wait_status(sm, name, ("InService",))
            for conc in (1, 8):
                for name in ("plain", "shadowed"):
                    url = f"{server.url}/endpoints/{name}/invocations"
                    results[f"{name}_c{conc}"] = asyncio.run(load(url, body, conc, args.seconds))
        finally:
            server.stop()
    print(f"\nshadow variant overhead, 1 CSV row, LinearRegression; {os.cpu_count()} CPUs")
    print_table(results)
    ratios = {
        f"{stat}_ratio_c{c}": results[f"shadowed_c{c}"][stat] / results[f"plain_c{c}"][stat]
        for c in (1, 8)
        for stat in ("p50_ms", "p99_ms")
    }
    for k, v in ratios.items():
        print(f"{k:<20}{v:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": platform.platform(), "cpus": os.cpu_count(), "results": results, "ratios": ratios}, indent=2
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
