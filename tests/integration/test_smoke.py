"""The walking-skeleton flow of the issue, driven by unmodified boto3 clients."""

from __future__ import annotations

import json

from tests.helpers import SKLEARN_IMAGE, csv_row, diabetes, sklearn_model


def test_boto3_flow_create_invoke_delete(server, sm, rt) -> None:
    data, model = sklearn_model()
    server.put_object("s3://models/sk/model.tar.gz", data)
    sm.create_model(
        ModelName="boston",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/x",
        PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://models/sk/model.tar.gz"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="boston-cfg",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "boston",
                "InitialInstanceCount": 2,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName="boston", EndpointConfigName="boston-cfg")
    assert sm.describe_endpoint(EndpointName="boston")["EndpointStatus"] == "Creating"
    sm.get_waiter("endpoint_in_service").wait(EndpointName="boston", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    x, _ = diabetes()
    row = csv_row(x[0])
    resp = rt.invoke_endpoint(EndpointName="boston", ContentType="text/csv", Body=row)
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    assert resp["ContentType"].startswith("application/json")
    got = json.loads(resp["Body"].read())
    expected = model.predict([[float(v) for v in row.split(",")]])[0]
    assert abs(got[0] - expected) < 1e-9
    desc = sm.describe_endpoint(EndpointName="boston")
    assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    sm.delete_endpoint(EndpointName="boston")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="boston", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
