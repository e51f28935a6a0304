"""How long clients with their default polling wait for an endpoint, against when it is ready.

Each client runs unmodified in its own process with only the ``modelhost env`` environment:

* ``sdk_deploy``: ``SKLearnModel(...).deploy()`` with a plain ``sagemaker.Session()`` (the SDK sleeps
  ``poll=30`` s *before* each DescribeEndpoint, ``sagemaker.session._wait_until``);
* ``boto3_waiter``: ``create_endpoint`` then botocore's ``endpoint_in_service`` waiter (30 s delay).

"ready" is the endpoint's own ``LastModifiedTime`` (when it went ``InService``), "needs" is that minus
``CreationTime``; "late" is how long after ready the client returned. Every scenario runs against a
server with the waiting Describe* (``MODELHOST_DESCRIBE_WAIT`` default) and, as the reference in the
same run, one with it off (``MODELHOST_DESCRIBE_WAIT=0``). Processes are not pinned: the server, its
instance processes and the client share this machine's cores (``--runs`` sequential runs each).

    .venv/bin/python bench/waits.py [--runs 2] [--out bench/results/waits.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import SKLEARN_IMAGE, Server, sklearn_model  # noqa: E402
from tests.integration.test_unmodified_clients import client_environment  # noqa: E402
from tests.seed_snippets import PRELUDE, SKLEARN_ENTRY, SKLEARN_TIMED  # noqa: E402

WAITER = f"""
import json, time, uuid
import boto3

sm, s3 = boto3.client("sagemaker"), boto3.client("s3")
name = "w-" + uuid.uuid4().hex[:8]
try:
    s3.create_bucket(Bucket="bench-waits")
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
s3.upload_file("sk-plain.tar.gz", "bench-waits", name + "/model.tar.gz")
sm.create_model(ModelName=name, ExecutionRoleArn="arn:aws:iam::123456789012:role/modelhost",
                PrimaryContainer={{"Image": "{SKLEARN_IMAGE}", "ModelDataUrl": f"s3://bench-waits/{{name}}/model.tar.gz"}})
sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{{"VariantName": "AllTraffic",
    "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}}])
started = time.time()
sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
sm.get_waiter("endpoint_in_service").wait(EndpointName=name)
returned = time.time()
d = sm.describe_endpoint(EndpointName=name)
ready, created = d["LastModifiedTime"].timestamp(), d["CreationTime"].timestamp()
print("RESULT " + json.dumps(dict(deploy_s=returned - started, created_s=created - started, ready_s=ready - started,
                                  late_s=returned - ready)))
sm.delete_endpoint(EndpointName=name)
"""

SCENARIOS = {"sdk_deploy": PRELUDE + SKLEARN_TIMED, "boto3_waiter": WAITER}


def run_script(code: str, work: Path, env: dict[str, str]) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if "RESULT " in line:  # the SDK's wait prints "-"/"!" without a newline before it
            doc = json.loads(line[line.index("RESULT ") + len("RESULT ") :])
            return {k: float(v) for k, v in doc.items() if k.endswith("_s")}
    raise RuntimeError(f"the client failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "waits.json")
    args = ap.parse_args()
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "runs": args.runs}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        archive, _ = sklearn_model()
        (work / "sk-plain.tar.gz").write_bytes(archive)
        (work / "sk-model.tar.gz").write_bytes(archive)
        (work / "entry.py").write_text(SKLEARN_ENTRY)
        for mode, describe_wait in (("waiting_describe", None), ("reference_no_wait", "0")):
            extra = {} if describe_wait is None else {"MODELHOST_DESCRIBE_WAIT": describe_wait}
            server = Server(Path(tmp) / f"data-{mode}", env=extra).start()
            try:
                env = client_environment(server.url)
                for name, code in SCENARIOS.items():
                    runs = [run_script(code, work, env) for _ in range(args.runs)]
                    results[f"{mode}/{name}"] = {
                        k: statistics.median(r[k] for r in runs) for k in ("deploy_s", "created_s", "ready_s", "late_s")
                    } | {"samples": runs}
            finally:
                server.stop()
    print(f"{'scenario':38} {'client returned':>16} {'endpoint needs':>15} {'late after ready':>17}")
    for key, r in results.items():
        if "/" in key:
            needs = r["ready_s"] - r["created_s"]
            print(f"{key:38} {r['deploy_s']:15.2f}s {needs:14.2f}s {r['late_s']:16.2f}s")
    for name in SCENARIOS:
        on, off = results[f"waiting_describe/{name}"], results[f"reference_no_wait/{name}"]
        print(f"{name}: wall time with the waiting Describe* / without = {on['deploy_s'] / off['deploy_s']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
