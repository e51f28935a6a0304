"""IAM-style permissions: a key's ``permissions`` line is a comma list of grants, each an action
pattern (``sagemaker:InvokeEndpoint``, ``sagemaker:Describe*``, ``s3:*``, ``*``) optionally restricted
to a resource-ARN pattern after ``=`` (``sagemaker:InvokeEndpoint=arn:aws:sagemaker:*:*:endpoint/prod-*``).
No line means ``*`` (everything). Patterns use ``*`` (any run of characters, ``/`` and ``:``
included) and ``?`` (one character); actions match case-insensitively (as IAM's do), resources
case-sensitively. There are only allows: anything no grant matches is denied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from modelhost.errors import ApiError

ACTION = re.compile(r"\*|[A-Za-z0-9-]+:[A-Za-z0-9*?]+")
# Verbs of the calls the audit log records (control plane and S3 IAM actions alike).
MUTATING_VERBS = ("Create", "Update", "Delete", "Put", "Register", "Deregister", "Stop", "Add", "Remove", "Abort")
MAX_CACHED = 4096


class AccessDenied(ApiError):
    """A signed caller whose permissions do not allow the action on the resource.

    JSON services answer ``AccessDeniedException`` (400, as SageMaker's common errors say); the S3
    route answers ``AccessDenied`` (403) with ``s3_message``."""

    code = "AccessDeniedException"
    status = 400

    def __init__(self, user_arn: str, action: str, resource: str) -> None:
        super().__init__(
            f"User: {user_arn} is not authorized to perform: {action} on resource: {resource} "
            f"because no identity-based policy allows the {action} action"
        )
        self.user_arn = user_arn
        self.action = action
        self.resource = resource

    @property
    def s3_message(self) -> str:
        return (
            f'User: {self.user_arn} is not authorized to perform: {self.action} on resource: "{self.resource}" '
            f"because no identity-based policy allows the {self.action} action"
        )


def _glob(pattern: str, flags: int = 0) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), flags | re.DOTALL)


@dataclass(frozen=True)
class Grant:
    action: str
    resource: str = "*"

    def __post_init__(self) -> None:
        if not ACTION.fullmatch(self.action):
            raise ValueError(f"bad action {self.action!r} (expected '*' or 'service:Action', wildcards * and ?)")
        if self.resource != "*" and not self.resource.startswith("arn:"):
            raise ValueError(f"bad resource {self.resource!r} for {self.action} (expected '*' or an ARN pattern)")


@dataclass
class Policy:
    """A key's grants, with the decisions it has made remembered (the hot path asks the same question)."""

    grants: tuple[Grant, ...]
    _compiled: list[tuple[re.Pattern[str], re.Pattern[str]]] = field(init=False, repr=False)
    _decided: dict[tuple[str, str], bool] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._compiled = [(_glob(g.action, re.IGNORECASE), _glob(g.resource)) for g in self.grants]

    @classmethod
    def parse(cls, text: str | None) -> Policy:
        """``a[=arn], b, ...``; None or blank: ``*``."""
        if text is None or not text.strip():
            return cls((Grant("*"),))
        grants = []
        for item in text.split(","):
            item = item.strip()
            if not item:
                raise ValueError("empty entry in the permissions list")
            action, _, resource = item.partition("=")
            grants.append(Grant(action.strip(), resource.strip() or "*"))
        return cls(tuple(grants))

    def allows(self, action: str, resource: str) -> bool:
        key = (action, resource)
        decided = self._decided.get(key)
        if decided is None:
            decided = any(a.fullmatch(action) and r.fullmatch(resource) for a, r in self._compiled)
            if len(self._decided) >= MAX_CACHED:
                self._decided.clear()
            self._decided[key] = decided
        return decided


class Principal(Protocol):
    @property
    def arn(self) -> str: ...

    @property
    def policy(self) -> Policy: ...


def authorize(principal: Principal, action: str, resource: str = "*") -> None:
    """Raise AccessDenied unless ``principal``'s policy allows ``action`` on ``resource``."""
    if not principal.policy.allows(action, resource):
        raise AccessDenied(principal.arn, action, resource)


def is_mutating(action: str) -> bool:
    """Whether the audit log records an accepted call of ``action`` (``service:Verb...``)."""
    return action.partition(":")[2].startswith(MUTATING_VERBS)
