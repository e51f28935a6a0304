"""Table definitions. Each resource keeps its request as JSON (`spec`) plus the columns we filter on.

Names are unique case-insensitively (`name_key` is the lower-cased name), as in SageMaker.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Integer, LargeBinary, MetaData, String, Table, Text

metadata = MetaData()


def _named_resource(name: str) -> Table:
    """A resource that is only a name, an ARN, a creation time and its request (models, configs)."""
    return Table(
        name,
        metadata,
        Column("name_key", String(63), primary_key=True),
        Column("name", String(63), nullable=False),
        Column("arn", String(256), nullable=False),
        Column("creation_time", Float, nullable=False),
        Column("spec", Text, nullable=False),
    )


models = _named_resource("models")
endpoint_configs = _named_resource("endpoint_configs")

endpoints = Table(
    "endpoints",
    metadata,
    Column("name_key", String(63), primary_key=True),
    Column("name", String(63), nullable=False),
    Column("arn", String(256), nullable=False),
    Column("config_name", String(63), nullable=False),
    Column("status", String(32), nullable=False),
    Column("failure_reason", Text),
    Column("creation_time", Float, nullable=False),
    Column("last_modified_time", Float, nullable=False),
    Column("spec", Text, nullable=False),
    # What is deployed: the endpoint config and its models as they were when the endpoint was
    # created. Configs and models may be deleted while the endpoint runs; a restart needs this.
    Column("deployment", Text, nullable=False),
)

tags = Table(
    "tags",
    metadata,
    Column("resource_arn", String(256), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", String(256), nullable=False),
)

# Application Auto Scaling (keyed by resource id "endpoint/<name>/variant/<variant>" and dimension).
scalable_targets = Table(
    "scalable_targets",
    metadata,
    Column("resource_id", String(1600), primary_key=True),
    Column("dimension", String(128), primary_key=True),
    Column("arn", String(256), nullable=False),
    Column("creation_time", Float, nullable=False),
    Column("spec", Text, nullable=False),
)

scaling_policies = Table(
    "scaling_policies",
    metadata,
    Column("resource_id", String(1600), primary_key=True),
    Column("dimension", String(128), primary_key=True),
    Column("name", String(256), primary_key=True),
    Column("arn", String(512), nullable=False),
    Column("creation_time", Float, nullable=False),
    Column("spec", Text, nullable=False),
)

scaling_activities = Table(
    "scaling_activities",
    metadata,
    Column("activity_id", String(64), primary_key=True),
    Column("resource_id", String(1600), nullable=False, index=True),
    Column("dimension", String(128), nullable=False),
    Column("start_time", Float, nullable=False),
    Column("spec", Text, nullable=False),
)

# Asynchronous inference (hosting/asyncq.py): one row per accepted InvokeEndpointAsync request,
# the durable queue. `seq` orders the queue (oldest first); `status` moves
# Pending -> InProgress -> Completing -> Completed | Failed (see asyncq for the commit protocol).
async_requests = Table(
    "async_requests",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    # (inference_id and endpoint lost their indexes in 0008_async_fast: no query uses them, every
    # insert paid for them)
    Column("inference_id", String(64), nullable=False),
    Column("endpoint", String(63), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("received_time", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_owner", String(64)),
    Column("lease_expires", Float),
    Column("completed_time", Float),
    # the request as accepted (headers, input, output/failure locations, topics): JSON
    Column("spec", Text, nullable=False),
    # the outcome being committed / committed: JSON (final status, temp file, etag, reason, ...)
    Column("outcome", Text),
    # the notification still to send (JSON {"topic", "message"}), NULL once sent or when none
    Column("notification", Text),
    # the inline request body (0008_async_fast), written with the row so the 202 needs one write;
    # NULL once the request is finished (or for an InputLocation)
    Column("body", LargeBinary),
)

# Batch transform jobs (migration 0003_transform). `spec` is the request as given (less Tags),
# `deployment` the model definition frozen at create time (a resume after a restart needs it),
# `progress` JSON counters written by the job runner.
transform_jobs = Table(
    "transform_jobs",
    metadata,
    Column("name_key", String(63), primary_key=True),
    Column("name", String(63), nullable=False),
    Column("arn", String(256), nullable=False),
    Column("model_name", String(63), nullable=False),
    Column("status", String(32), nullable=False),
    Column("failure_reason", Text),
    Column("creation_time", Float, nullable=False),
    Column("last_modified_time", Float, nullable=False),
    Column("start_time", Float),
    Column("end_time", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("spec", Text, nullable=False),
    Column("deployment", Text, nullable=False),
    Column("progress", Text),
)

# One row per input object a transform job finished (Completed or Failed): what a resumed job skips.
transform_job_objects = Table(
    "transform_job_objects",
    metadata,
    Column("job_key", String(63), primary_key=True),
    Column("key", String(1024), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("records", Integer, nullable=False, default=0),
    Column("output_uri", Text),
    Column("reason", Text),
)

# --- Processing jobs and Model Monitor (migration 0007_monitoring) ---
# A processing job's `spec` is the request as given (less Tags); `exit_message` is what the job's
# container left in /opt/ml/output/message (the analyzer's "CompletedWithViolations: ...").
processing_jobs = Table(
    "processing_jobs",
    metadata,
    Column("name_key", String(63), primary_key=True),
    Column("name", String(63), nullable=False),
    Column("arn", String(256), nullable=False),
    Column("status", String(32), nullable=False, index=True),
    Column("failure_reason", Text),
    Column("exit_message", Text),
    Column("creation_time", Float, nullable=False),
    Column("last_modified_time", Float, nullable=False),
    Column("start_time", Float),
    Column("end_time", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("monitoring_schedule_arn", String(256)),
    Column("spec", Text, nullable=False),
)

data_quality_job_definitions = Table(
    "data_quality_job_definitions",
    metadata,
    Column("name_key", String(63), primary_key=True),
    Column("name", String(63), nullable=False),
    Column("arn", String(256), nullable=False),
    Column("creation_time", Float, nullable=False),
    Column("endpoint_name", String(63)),
    Column("spec", Text, nullable=False),
)

# `spec` holds MonitoringScheduleConfig and MonitoringType; `endpoint_name` the monitored endpoint
# (DeleteEndpoint refuses while a schedule names it).
monitoring_schedules = Table(
    "monitoring_schedules",
    metadata,
    Column("name_key", String(63), primary_key=True),
    Column("name", String(63), nullable=False),
    Column("arn", String(256), nullable=False),
    Column("status", String(32), nullable=False),
    Column("failure_reason", Text),
    Column("creation_time", Float, nullable=False),
    Column("last_modified_time", Float, nullable=False),
    Column("endpoint_name", String(63), index=True),
    Column("spec", Text, nullable=False),
)

# One row per schedule slot that ran (the primary key makes a slot run at most once, restarts included).
monitoring_executions = Table(
    "monitoring_executions",
    metadata,
    Column("schedule_key", String(63), primary_key=True),
    Column("scheduled_time", Float, primary_key=True),
    Column("schedule_name", String(63), nullable=False),
    Column("creation_time", Float, nullable=False),
    Column("processing_job_name", String(63)),
    Column("endpoint_name", String(63)),
    Column("monitoring_type", String(32), nullable=False),
    Column("failure_reason", Text),
)

# Lambda functions (issue 11): the function's configuration as GetFunctionConfiguration answers it
# (`spec`), and Event invocations queued durably until they have run once.
lambda_functions = Table(
    "lambda_functions",
    metadata,
    Column("name_key", String(64), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("arn", String(256), nullable=False),
    Column("creation_time", Float, nullable=False),
    Column("spec", Text, nullable=False),
    Column("reserved_concurrency", Integer),
)

lambda_events = Table(
    "lambda_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("function", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False, index=True),
    Column("received_time", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("payload", Text, nullable=False),
    Column("outcome", Text),
)

# --- front doors (several servers on one database): the leader's published routes (resources/front_doors.py)
front_door_routes = Table(
    "front_door_routes",
    metadata,
    Column("name_key", String(63), primary_key=True),
    Column("version", Integer, nullable=False),  # bumped on every change: followers rebuild only what changed
    Column("route", Text, nullable=False),  # a PublishedRoute as JSON
    Column("updated", Float, nullable=False),
)

# Request counters of each follower's attached fleets: the leader adds their growth to its own fleets.
front_door_traffic = Table(
    "front_door_traffic",
    metadata,
    Column("door", String(32), primary_key=True),
    Column("name_key", String(63), primary_key=True),
    Column("slot", String(80), primary_key=True),  # "<live|shadow|green>:<variant>"
    Column("requests", Integer, nullable=False),
    Column("errors_4xx", Integer, nullable=False),
    Column("errors_5xx", Integer, nullable=False),
    Column("updated", Float, nullable=False),
)
