"""What can go wrong on the data path, as domain errors (no wire text: server/ maps them to the
protocol's errors and messages)."""

from __future__ import annotations


class HostingError(Exception):
    """A request the data plane could not serve."""


class EndpointNotFound(HostingError):
    """No route is published for the endpoint."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(f"no route for endpoint {endpoint}")
        self.endpoint = endpoint


class VariantNotFound(HostingError):
    """TargetVariant names no variant of the endpoint; ``valid`` are the ones it has."""

    def __init__(self, endpoint: str, variant: str, valid: tuple[str, ...]) -> None:
        super().__init__(f"no variant {variant} in endpoint {endpoint} (has {', '.join(valid)})")
        self.endpoint = endpoint
        self.variant = variant
        self.valid = valid


class NoCapacity(HostingError):
    """No healthy instance of the variant became available in time."""

    def __init__(self, endpoint: str, variant: str) -> None:
        super().__init__(f"no healthy instance of variant {variant} of endpoint {endpoint}")
        self.endpoint = endpoint
        self.variant = variant


class ModelFailed(HostingError):
    """The model answered with an error status (``status``, its body as ``message``)."""

    def __init__(self, endpoint: str, variant: str, status: int, message: str, log_stream_arn: str) -> None:
        super().__init__(f"model of variant {variant} of endpoint {endpoint} failed ({status}): {message}")
        self.endpoint = endpoint
        self.variant = variant
        self.status = status
        self.message = message
        self.log_stream_arn = log_stream_arn


class ModelTimedOut(ModelFailed):
    """No answer within the variant's timeout (seconds); the instance is recycled. Status 0."""

    def __init__(self, endpoint: str, variant: str, timeout: float, log_stream_arn: str) -> None:
        super().__init__(endpoint, variant, 0, f"no response within {timeout:g}s", log_stream_arn)
        self.timeout = timeout


class ModelLost(ModelFailed):
    """The connection to the instance broke mid-request (``message`` says how). Status 0."""

    def __init__(self, endpoint: str, variant: str, detail: str, log_stream_arn: str) -> None:
        super().__init__(endpoint, variant, 0, detail, log_stream_arn)


__all__ = [
    "EndpointNotFound",
    "HostingError",
    "ModelFailed",
    "ModelLost",
    "ModelTimedOut",
    "NoCapacity",
    "VariantNotFound",
]


class NotAsyncEndpoint(HostingError):
    """InvokeEndpointAsync on an endpoint whose config has no AsyncInferenceConfig."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(f"{endpoint} is not an asynchronous inference endpoint")
        self.endpoint = endpoint


class EndpointNotInService(HostingError):
    def __init__(self, endpoint: str, status: str) -> None:
        super().__init__(f"{endpoint} is not in service ({status})")
        self.endpoint = endpoint
        self.status = status


class InvalidOutputLocation(HostingError):
    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"{uri}: {reason}")
        self.uri = uri
        self.reason = reason


class Throttled(HostingError):
    """A serverless variant (or Lambda function) already has ``limit`` requests in flight."""

    def __init__(self, endpoint: str, variant: str, limit: int, reserved: bool = True) -> None:
        super().__init__(f"variant {variant} of endpoint {endpoint} is at its concurrency limit ({limit})")
        self.endpoint = endpoint
        self.variant = variant
        self.limit = limit
        self.reserved = reserved  # a Lambda function's own reserved concurrency (else the default limit)


class PayloadTooLarge(HostingError):
    """The request body is over the variant's limit (serverless: 4 MB)."""

    def __init__(self, endpoint: str, size: int, limit: int) -> None:
        super().__init__(f"request body of {size} bytes exceeds {limit} bytes for endpoint {endpoint}")
        self.endpoint = endpoint
        self.size = size
        self.limit = limit


class ColdStartFailed(ModelFailed):
    """A serverless cold start failed or took longer than the limit; ``message`` says why. Status 0."""

    def __init__(self, endpoint: str, variant: str, reason: str, log_stream_arn: str) -> None:
        super().__init__(endpoint, variant, 0, reason, log_stream_arn)
