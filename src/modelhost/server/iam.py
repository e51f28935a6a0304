"""The IAM calls SageMaker clients make (query protocol, XML; ``Version=2010-05-08``).

``sagemaker.get_execution_role()`` turns the caller's assumed-role ARN (server/sts.py) into the role's
ARN with ``GetRole``; any ``ClientError`` there makes it fall back to the ARN it derived, but botocore
can only raise one when the answer is well-formed XML. So: ``GetRole`` and ``ListRoles`` answer for
the one role modelhost has (``MODELHOST_ROLE_NAME``, default ``modelhost``), ``GetRole`` of another
name is IAM's ``NoSuchEntity`` (404), and every other action IAM's ``ErrorResponse`` (400
``InvalidAction``), so boto3 and the AWS CLI raise a ``ClientError`` with the code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import parse_qs, quote
from xml.sax.saxutils import escape

from modelhost.security import AccessDenied
from modelhost.server.access import authorize
from modelhost.server.asgi import BodyTooLarge, Receive, Scope, Send, read_body, request_id

NS = "https://iam.amazonaws.com/doc/2010-05-08/"
VERSION = "2010-05-08"
MAX_BODY = 64 * 1024
CREATED = "2024-01-01T00:00:00Z"  # the role exists as long as the server: a fixed, valid date
# SageMaker may assume the role (what a SageMaker execution role's trust policy says).
TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


@dataclass(frozen=True)
class Role:
    name: str
    account: str

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account}:role/{self.name}"

    @property
    def role_id(self) -> str:
        # IAM role ids are AROA + 17 upper-case characters; stable for one role name and account.
        return "AROA" + hashlib.sha256(self.arn.encode()).hexdigest()[:17].upper()

    def xml(self) -> str:
        policy = quote(json.dumps(TRUST_POLICY, separators=(",", ":")))
        return (
            f"<Path>/</Path><RoleName>{escape(self.name)}</RoleName><RoleId>{self.role_id}</RoleId>"
            f"<Arn>{escape(self.arn)}</Arn><CreateDate>{CREATED}</CreateDate>"
            f"<AssumeRolePolicyDocument>{policy}</AssumeRolePolicyDocument>"
            "<Description>The execution role of models hosted by modelhost.</Description>"
            "<MaxSessionDuration>3600</MaxSessionDuration>"
        )


def error_xml(code: str, message: str, rid: str, kind: str = "Sender") -> bytes:
    """IAM's error document (botocore's query parser reads Error/Code and Error/Message)."""
    return (
        f'<ErrorResponse xmlns="{NS}"><Error><Type>{kind}</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
    ).encode()


def _result(action: str, body: str, rid: str) -> bytes:
    return (
        f'<{action}Response xmlns="{NS}"><{action}Result>{body}</{action}Result>'
        f"<ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></{action}Response>"
    ).encode()


def answer(role: Role, scope: Scope, params: dict[str, list[str]], rid: str) -> tuple[int, bytes]:
    """(HTTP status, XML) for one IAM request."""
    action = (params.get("Action") or [""])[0]
    try:
        if action == "GetRole":
            name = (params.get("RoleName") or [""])[0]
            if not name:
                message = "1 validation error detected: Value null at 'roleName' failed to satisfy constraint: "
                return 400, error_xml("ValidationError", message + "Member must not be null", rid)
            authorize(scope, "iam:GetRole", f"arn:aws:iam::{role.account}:role/{name}")
            if name != role.name:
                return 404, error_xml("NoSuchEntity", f"The role with name {name} cannot be found.", rid)
            return 200, _result("GetRole", f"<Role>{role.xml()}</Role>", rid)
        if action == "ListRoles":
            authorize(scope, "iam:ListRoles", "*")
            members = f"<Roles><member>{role.xml()}</member></Roles><IsTruncated>false</IsTruncated>"
            return 200, _result("ListRoles", members, rid)
    except AccessDenied as err:
        return 403, error_xml("AccessDenied", str(err), rid)
    if not action:
        return 400, error_xml("MissingAction", "The request must contain the parameter Action.", rid)
    message = f"Could not find operation {action} for version {VERSION}; modelhost answers GetRole and ListRoles."
    return 400, error_xml("InvalidAction", message, rid)


async def send_xml(send: Send, status: int, data: bytes) -> None:
    headers = [(b"content-type", b"text/xml"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def is_iam_request(scope: Scope) -> bool:
    """Signed for iam (unsigned IAM calls reach STS's route, which hands them here by Version)."""
    return any(name == b"authorization" and b"/iam/aws4_request" in value for name, value in scope["headers"])


class IamApp:
    def __init__(self, role_name: str, account_id: str) -> None:
        self.role = Role(role_name, account_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id(scope)
        try:
            body = await read_body(receive, MAX_BODY)
        except BodyTooLarge:
            await send_xml(send, 400, error_xml("ValidationError", "Request body too large.", rid))
            return
        params = parse_qs(body.decode() + "&" + scope.get("query_string", b"").decode())
        status, data = answer(self.role, scope, params, rid)
        await send_xml(send, status, data)
