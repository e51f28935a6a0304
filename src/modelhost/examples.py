"""The quick-start example: a scikit-learn LinearRegression trained on load_diabetes, put in the
local bucket store as s3://examples/diabetes/model.tar.gz and deployed through the API."""

from __future__ import annotations

import io
import shutil
import sys
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

from modelhost.config import Settings
from modelhost.store.blobs_files import FileBlobs

SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
EXAMPLE_URI = "s3://examples/diabetes/model.tar.gz"


def diabetes_model_tarball() -> tuple[bytes, str]:
    """(model.tar.gz bytes, one CSV row to send it)."""
    import joblib
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    x, y = load_diabetes(return_X_y=True)
    model = LinearRegression().fit(x, y)
    buf = io.BytesIO()
    joblib.dump(model, buf)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.joblib")
        info.size = len(buf.getvalue())
        tar.addfile(info, io.BytesIO(buf.getvalue()))
    return out.getvalue(), ",".join(f"{v:.5f}" for v in x[0])


def deploy_example(settings: Settings, name: str = "diabetes") -> str:
    from modelhost.client import clients

    tarball, row = diabetes_model_tarball()
    # Straight into the bucket tree of the embedded store (the server re-derives the object's metadata).
    FileBlobs().put_bytes(str(settings.buckets_dir / EXAMPLE_URI.removeprefix("s3://")), tarball)
    url = f"http://{settings.host}:{settings.port}"
    sm, rt = clients(url)
    try:
        sm.describe_endpoint(EndpointName=name)
        return row  # already deployed (it comes back by itself after a restart)
    except sm.exceptions.ClientError:
        pass
    for fn, kwargs in (
        (sm.delete_endpoint_config, {"EndpointConfigName": name}),
        (sm.delete_model, {"ModelName": name}),
    ):
        try:
            fn(**kwargs)
        except sm.exceptions.ClientError:
            pass
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn="arn:aws:iam::123456789012:role/modelhost",
        PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": EXAMPLE_URI},
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 2, "InstanceType": "ml.m5.large"}
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return row


def deploy_example_in_background(settings: Settings, name: str = "diabetes") -> None:
    def run() -> None:
        url = f"http://{settings.host}:{settings.port}"
        for _ in range(200):  # wait for the server to listen
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        try:
            row = deploy_example(settings, name)
        except Exception as exc:  # the server keeps running; say why the example is missing
            print(f"example endpoint could not be deployed: {exc}", flush=True)
            return
        # The CLI may live in a virtualenv that is not on PATH (scripts/quickstart): name it fully then.
        cli = "modelhost" if shutil.which("modelhost") else str(Path(sys.executable).parent / "modelhost")
        print(
            f"\nExample endpoint '{name}' is InService. Call it with:\n"
            f"  {cli} invoke {name} --url {url} --content-type text/csv --body '{row}'\n"
            f"or with the AWS CLI:\n"
            f"  aws sagemaker-runtime invoke-endpoint --endpoint-url {url} --region us-east-1 "
            f"--endpoint-name {name} --content-type text/csv --body '{row}' /dev/stdout\n"
            f"or from Python:\n"
            f"  boto3.client('sagemaker-runtime', endpoint_url='{url}', region_name='us-east-1')"
            f".invoke_endpoint(EndpointName='{name}', ContentType='text/csv', Body='{row}')\n",
            flush=True,
        )

    threading.Thread(target=run, name="example-deployer", daemon=True).start()
