"""InvokeEndpoint's TargetModel and TargetContainerHostname: the members' constraints, and the
service's errors for the data plane's refusals (multi-model endpoints, inference pipelines)."""

from __future__ import annotations

import regex

from modelhost.errors import ModelNotReadyException, RuntimeApiError, ValidationError
from modelhost.hosting.errors import (
    HostingError,
    ModelNotReady,
    TargetContainerNotSupported,
    TargetContainerRequired,
    TargetContainerUnknown,
    TargetModelNotFound,
    TargetModelNotSupported,
    TargetModelRequired,
)

TARGET_MODEL_PATTERN = r"\A\S[\p{Print}]*\z"
TARGET_MODEL = regex.compile(r"\S[\p{Print}]*")
HOSTNAME_PATTERN = "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
HOSTNAME = regex.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


def _constraint(value: str, member: str, constraint: str) -> ValidationError:
    return ValidationError(
        f"1 validation error detected: Value '{value[:80]}' at '{member}' failed to satisfy constraint: "
        f"Member must {constraint}"
    )


def check_target_header(name: bytes, value: str) -> None:
    if name == b"x-amzn-sagemaker-target-model":
        if not 1 <= len(value) <= 1024 or not TARGET_MODEL.fullmatch(value):
            raise _constraint(
                value,
                "targetModel",
                f"have length between 1 and 1024 and satisfy regular expression pattern: {TARGET_MODEL_PATTERN}",
            )
    elif not HOSTNAME.fullmatch(value):
        raise _constraint(value, "targetContainerHostname", f"satisfy regular expression pattern: {HOSTNAME_PATTERN}")


def target_error(err: HostingError, account_id: str) -> RuntimeApiError | None:
    """The service's error for a targeting refusal, or None for other domain errors."""
    if isinstance(err, TargetModelNotSupported):
        return ValidationError(
            f"Endpoint {err.endpoint} of account {account_id} is not a multi-model endpoint and does not support "
            "target model header."
        )
    if isinstance(err, TargetModelRequired):
        return ValidationError(
            f"Endpoint {err.endpoint} of account {account_id} is a multi-model endpoint: the request must specify "
            "the target model header (TargetModel)."
        )
    if isinstance(err, TargetModelNotFound):
        return ValidationError(
            f"Failed to download model data(bucket: {err.bucket}, key: {err.key}). Please ensure that there is an "
            "object located at the URL and that the role passed to CreateModel has permissions to download the "
            "model."
        )
    if isinstance(err, ModelNotReady):
        return ModelNotReadyException(
            f"Model {err.target_model} is not ready yet: it is still being loaded on endpoint {err.endpoint} "
            f"(waited {err.waited:g} seconds). Please retry the request."
        )
    if isinstance(err, TargetContainerRequired):
        return ValidationError(
            f"Endpoint {err.endpoint} of account {account_id} is configured with the Direct inference execution "
            "mode: the request must specify the target container hostname (TargetContainerHostname)."
        )
    if isinstance(err, TargetContainerUnknown):
        return ValidationError(
            f"Target container hostname {err.hostname} is not valid for endpoint {err.endpoint} of account "
            f"{account_id}. Valid container hostnames: {', '.join(err.valid)}."
        )
    if isinstance(err, TargetContainerNotSupported):
        return ValidationError(
            f"Endpoint {err.endpoint} of account {account_id} is not configured with the Direct inference "
            "execution mode and does not support target container hostname header."
        )
    return None
