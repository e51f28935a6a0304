"""AWS-shaped errors shared by the control plane (JSON 1.1) and the runtime (rest-json).

The ``code`` becomes ``__type`` in the body and the ``x-amzn-ErrorType`` header, which is what
botocore uses to pick the exception class; ``status`` is the HTTP status.
"""

from __future__ import annotations


class ApiError(Exception):
    """An AWS-shaped error. code -> __type / x-amzn-ErrorType; status -> HTTP status."""

    code: str = "InternalFailure"
    status: int = 400

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.message = message
        # Extra top-level JSON members: botocore re-parses modelled errors against their shape,
        # so modelled fields must sit beside the message, not nested.
        self.fields: dict[str, object] = dict(fields)

    def body(self) -> dict[str, object]:
        """JSON 1.1 error body: botocore reads the code from ``__type`` and text from ``message``."""
        return {"__type": self.code, "message": self.message, **self.fields}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


# --- control plane (SageMaker JSON 1.1): none of these is modelled with a status, so all are 400.


class ValidationException(ApiError):
    code = "ValidationException"


class ResourceNotFound(ApiError):
    code = "ResourceNotFound"


class ResourceInUse(ApiError):
    code = "ResourceInUse"


class ResourceLimitExceeded(ApiError):
    code = "ResourceLimitExceeded"


class UnknownOperationException(ApiError):
    code = "UnknownOperationException"


class SerializationException(ApiError):
    """Malformed request body (not JSON, or not a JSON object)."""

    code = "SerializationException"


class InternalFailure(ApiError):
    code = "InternalFailure"
    status = 500


class ObjectNotFoundException(ApiError):
    """Application Auto Scaling: the scalable target or policy does not exist."""

    code = "ObjectNotFoundException"


# --- runtime (sagemaker-runtime, rest-json): modelled error shapes use capitalised ``Message``.


class RuntimeApiError(ApiError):
    """A sagemaker-runtime error; the body carries ``Message`` (and optionally ``ErrorCode``)."""

    code = "InternalFailure"
    status = 500

    def __init__(self, message: str, *, error_code: str | None = None, **fields: object) -> None:
        super().__init__(message, **fields)
        self.error_code = error_code

    def body(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.error_code is not None:
            out["ErrorCode"] = self.error_code
        out["Message"] = self.message
        out.update(self.fields)
        return out


class ValidationError(RuntimeApiError):
    code = "ValidationError"
    status = 400


class ModelError(RuntimeApiError):
    """The container answered with an error (or timed out); 424 like the real service."""

    code = "ModelError"
    status = 424

    def __init__(
        self,
        message: str,
        original_status_code: int,
        original_message: str,
        log_stream_arn: str,
        *,
        error_code: str | None = None,
    ) -> None:
        if error_code is None:
            # Mirrors the codes the real service puts in ErrorCode for container errors.
            error_code = "CLIENT_ERROR_FROM_MODEL" if 400 <= original_status_code < 500 else "SERVER_ERROR_FROM_MODEL"
        super().__init__(
            message,
            error_code=error_code,
            OriginalStatusCode=original_status_code,
            OriginalMessage=original_message,
            LogStreamArn=log_stream_arn,
        )
        self.original_status_code = original_status_code
        self.original_message = original_message
        self.log_stream_arn = log_stream_arn


class ModelNotReadyException(RuntimeApiError):
    code = "ModelNotReadyException"
    status = 429


class ThrottlingException(RuntimeApiError):
    """Too many requests in flight (a serverless variant at MaxConcurrency): HTTP 400 as the AWS
    runtime answers it; botocore's retry handler treats the code as throttling."""

    code = "ThrottlingException"
    status = 400


class ServiceUnavailable(RuntimeApiError):
    code = "ServiceUnavailable"
    status = 503


class RuntimeInternalFailure(RuntimeApiError):
    code = "InternalFailure"
    status = 500


__all__ = [
    "ApiError",
    "InternalFailure",
    "ModelError",
    "ModelNotReadyException",
    "ObjectNotFoundException",
    "ResourceInUse",
    "ResourceLimitExceeded",
    "ResourceNotFound",
    "RuntimeApiError",
    "RuntimeInternalFailure",
    "SerializationException",
    "ServiceUnavailable",
    "ThrottlingException",
    "UnknownOperationException",
    "ValidationError",
    "ValidationException",
]


# --- Lambda (rest-json): errors carry ``Type`` and ``message``; the status comes from the error shape.


class LambdaError(ApiError):
    def __init__(self, code: str, status: int, message: str, **fields: object) -> None:
        super().__init__(message, **fields)
        self.code = code
        self.status = status

    def body(self) -> dict[str, object]:
        return {"Type": "User", "message": self.message, **self.fields}

    @classmethod
    def not_found(cls, message: str) -> LambdaError:
        return cls("ResourceNotFoundException", 404, message)

    @classmethod
    def conflict(cls, message: str) -> LambdaError:
        return cls("ResourceConflictException", 409, message)

    @classmethod
    def invalid(cls, message: str) -> LambdaError:
        return cls("InvalidParameterValueException", 400, message)

    @classmethod
    def validation(cls, message: str) -> LambdaError:
        return cls("ValidationException", 400, message)

    @classmethod
    def precondition(cls, message: str) -> LambdaError:
        return cls("PreconditionFailedException", 412, message)

    @classmethod
    def too_many(cls, message: str, reason: str) -> LambdaError:
        return cls("TooManyRequestsException", 429, message, Reason=reason)

    @classmethod
    def too_large(cls, message: str) -> LambdaError:
        return cls("RequestTooLargeException", 413, message)
