"""Lambda functions: limits, the rules the service model does not express, and the states.

Pure policy (no I/O): control/functions.py applies it, controllers/functions.py moves the states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MEMORY_RANGE = (128, 10240)
TIMEOUT_RANGE = (1, 900)
DEFAULT_MEMORY = 128
DEFAULT_TIMEOUT = 3
DEFAULT_CONCURRENCY = 10  # unreserved functions: at most this many instances each on one machine
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024
MAX_EVENT_PAYLOAD = 256 * 1024
VERSION = "$LATEST"
RUNTIME_IMAGE = "modelhost/lambda"
# Lambda refuses these in Environment.Variables (it sets them itself).
RESERVED_ENV = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)


class State:
    PENDING = "Pending"
    ACTIVE = "Active"
    FAILED = "Failed"


class UpdateStatus:
    IN_PROGRESS = "InProgress"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"


def log_group(name: str) -> str:
    return f"/aws/lambda/{name}"


def config_refusal(req: dict[str, Any]) -> str | None:
    """Why CreateFunction / UpdateFunctionConfiguration values are refused (Lambda's words), or None."""
    memory = req.get("MemorySize")
    if memory is not None and not MEMORY_RANGE[0] <= memory <= MEMORY_RANGE[1]:
        return (
            f"1 validation error detected: Value '{memory}' at 'memorySize' failed to satisfy constraint: "
            f"Member must have value {'greater' if memory < MEMORY_RANGE[0] else 'less'} than or equal to "
            f"{MEMORY_RANGE[0] if memory < MEMORY_RANGE[0] else MEMORY_RANGE[1]}"
        )
    timeout = req.get("Timeout")
    if timeout is not None and not TIMEOUT_RANGE[0] <= timeout <= TIMEOUT_RANGE[1]:
        return (
            f"1 validation error detected: Value '{timeout}' at 'timeout' failed to satisfy constraint: "
            f"Member must have value {'greater' if timeout < 1 else 'less'} than or equal to "
            f"{1 if timeout < 1 else TIMEOUT_RANGE[1]}"
        )
    return None


def parameter_refusal(req: dict[str, Any]) -> str | None:
    """InvalidParameterValueException reasons."""
    runtime = req.get("Runtime")
    if runtime is not None and not runtime.startswith("python3"):
        return (
            f"The runtime parameter of {runtime} is not supported by modelhost: it runs Python functions "
            "(python3.x runtimes)."
        )
    handler = req.get("Handler")
    if handler is not None and "." not in handler:
        return f"Handler {handler!r} must be module.function (e.g. lambda_function.lambda_handler)."
    variables = (req.get("Environment") or {}).get("Variables") or {}
    reserved = sorted(k for k in variables if k in RESERVED_ENV)
    if reserved:
        return (
            "Lambda was unable to configure your environment variables because the environment variables you "
            "have provided contains reserved keys that are currently not supported for modification. Reserved "
            f"keys used in this request: {', '.join(reserved)}"
        )
    return None


@dataclass(frozen=True)
class FunctionSpec:
    """What runs: everything a deployment of the function needs, from its stored configuration."""

    name: str
    arn: str
    handler: str
    memory_mb: int
    timeout: int
    code_sha: str
    variables: dict[str, str]
    reserved_concurrency: int | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> FunctionSpec:
        spec = row["spec"]
        return cls(
            name=row["name"],
            arn=row["arn"],
            handler=spec.get("Handler", "lambda_function.lambda_handler"),
            memory_mb=int(spec.get("MemorySize", DEFAULT_MEMORY)),
            timeout=int(spec.get("Timeout", DEFAULT_TIMEOUT)),
            code_sha=spec["CodeSha256"],
            variables=dict((spec.get("Environment") or {}).get("Variables") or {}),
            reserved_concurrency=row.get("reserved_concurrency"),
        )

    @property
    def max_concurrency(self) -> int:
        return self.reserved_concurrency if self.reserved_concurrency is not None else DEFAULT_CONCURRENCY

    @property
    def revision(self) -> tuple[Any, ...]:
        """What a running deployment must match (a change redeploys; concurrency applies in place)."""
        return (self.handler, self.memory_mb, self.timeout, self.code_sha, tuple(sorted(self.variables.items())))
