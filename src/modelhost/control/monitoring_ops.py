"""Model Monitor's operations (processing jobs, data quality job definitions, monitoring schedules and
executions), merged into the SageMaker operation table."""

from __future__ import annotations

from collections.abc import Callable

from modelhost.control import executions, job_definitions, processing, schedules
from modelhost.control.context import ControlContext, Request, Response

MONITORING_OPERATIONS: dict[str, Callable[[ControlContext, Request], Response]] = {
    "CreateProcessingJob": processing.create_processing_job,
    "DescribeProcessingJob": processing.describe_processing_job,
    "ListProcessingJobs": processing.list_processing_jobs,
    "StopProcessingJob": processing.stop_processing_job,
    "CreateDataQualityJobDefinition": job_definitions.create_data_quality_job_definition,
    "DescribeDataQualityJobDefinition": job_definitions.describe_data_quality_job_definition,
    "ListDataQualityJobDefinitions": job_definitions.list_data_quality_job_definitions,
    "DeleteDataQualityJobDefinition": job_definitions.delete_data_quality_job_definition,
    "CreateMonitoringSchedule": schedules.create_monitoring_schedule,
    "DescribeMonitoringSchedule": schedules.describe_monitoring_schedule,
    "ListMonitoringSchedules": schedules.list_monitoring_schedules,
    "UpdateMonitoringSchedule": schedules.update_monitoring_schedule,
    "DeleteMonitoringSchedule": schedules.delete_monitoring_schedule,
    "StartMonitoringSchedule": schedules.start_monitoring_schedule,
    "StopMonitoringSchedule": schedules.stop_monitoring_schedule,
    "ListMonitoringExecutions": executions.list_monitoring_executions,
}
