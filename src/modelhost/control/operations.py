"""The operation table: SageMaker operation name -> control-plane function."""

from __future__ import annotations

from collections.abc import Callable

from modelhost.control import endpoint_configs, endpoints, models, tags, transform_jobs
from modelhost.control.context import ControlContext, Request, Response
from modelhost.control.monitoring_ops import MONITORING_OPERATIONS

Operation = Callable[[ControlContext, Request], Response]

SAGEMAKER_OPERATIONS: dict[str, Operation] = {
    "CreateModel": models.create_model,
    "DescribeModel": models.describe_model,
    "ListModels": models.list_models,
    "DeleteModel": models.delete_model,
    "CreateEndpointConfig": endpoint_configs.create_endpoint_config,
    "DescribeEndpointConfig": endpoint_configs.describe_endpoint_config,
    "ListEndpointConfigs": endpoint_configs.list_endpoint_configs,
    "DeleteEndpointConfig": endpoint_configs.delete_endpoint_config,
    "CreateEndpoint": endpoints.create_endpoint,
    "DescribeEndpoint": endpoints.describe_endpoint,
    "ListEndpoints": endpoints.list_endpoints,
    "UpdateEndpoint": endpoints.update_endpoint,
    "UpdateEndpointWeightsAndCapacities": endpoints.update_endpoint_weights_and_capacities,
    "DeleteEndpoint": endpoints.delete_endpoint,
    "AddTags": tags.add_tags,
    "ListTags": tags.list_tags,
    "DeleteTags": tags.delete_tags,
    "CreateTransformJob": transform_jobs.create_transform_job,
    "DescribeTransformJob": transform_jobs.describe_transform_job,
    "ListTransformJobs": transform_jobs.list_transform_jobs,
    "StopTransformJob": transform_jobs.stop_transform_job,
    **MONITORING_OPERATIONS,  # processing jobs, data quality job definitions, schedules, executions
}
