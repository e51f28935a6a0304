"""The one STS call SageMaker clients make: GetCallerIdentity (query protocol, XML).

The sagemaker SDK asks for the account id to name its default bucket
(``sagemaker-<region>-<account>``) and, in ``get_execution_role()``, for an assumed-role ARN it turns
into the role's (anything else is "not a role"). So the caller is a session of the server's role
(``arn:aws:sts::<account>:assumed-role/<MODELHOST_ROLE_NAME>/modelhost``) when requests are not
authenticated; when they are, the signing key's user (``arn:aws:iam::<account>:user/<section>``,
UserId the access key id), or a session of the key's ``role`` when its section names one.
Unsigned IAM calls (``Version=2010-05-08``) come this way too and are answered by server/iam.py.
"""

from __future__ import annotations

from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from modelhost.server import iam
from modelhost.server.asgi import CALLER, BodyTooLarge, Receive, Scope, Send, read_body, request_id

NS = "https://sts.amazonaws.com/doc/2011-06-15/"
MAX_BODY = 64 * 1024
SESSION = "modelhost"  # the role session name of unauthenticated callers


def is_sts_request(scope: Scope) -> bool:
    """Signed for sts, or unsigned with a query-protocol form body and no X-Amz-Target (so an
    unsigned call is refused in STS's shape when requests are authenticated)."""
    form = False
    for name, value in scope["headers"]:
        if name == b"authorization":
            return b"/sts/aws4_request" in value
        if name == b"x-amz-target":
            return False
        if name == b"content-type":
            form = value.startswith(b"application/x-www-form-urlencoded")
    return form


def error_xml(code: str, message: str, rid: str) -> bytes:
    """The query protocol's error document."""
    return (
        f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
    ).encode()


async def send_xml(send: Send, status: int, data: bytes) -> None:
    headers = [(b"content-type", b"text/xml"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class StsApp:
    def __init__(self, account_id: str, role_name: str = "modelhost") -> None:
        self.account_id = account_id
        self.role = iam.Role(role_name, account_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id(scope)
        try:
            body = await read_body(receive, MAX_BODY)
        except BodyTooLarge:
            await send_xml(send, 400, error_xml("InvalidParameterValue", "Request body too large.", rid))
            return
        params = parse_qs(body.decode() + "&" + scope.get("query_string", b"").decode())
        action = (params.get("Action") or [""])[0]
        if (params.get("Version") or [""])[0] == iam.VERSION:  # an unsigned IAM call
            await send_xml(send, *iam.answer(self.role, scope, params, rid))
            return
        if action == "GetCallerIdentity":  # always allowed: it names the verified key's user
            caller = scope.get(CALLER)
            key = getattr(caller, "key", None)
            if key is not None:
                arn, user_id, account = key.identity_arn, key.access_key, key.account
                if key.role:
                    user_id = f"{iam.Role(key.role, key.account).role_id}:{key.name}"
            else:  # requests are not authenticated: a session of the server's role
                arn = f"arn:aws:sts::{self.account_id}:assumed-role/{self.role.name}/{SESSION}"
                user_id, account = f"{self.role.role_id}:{SESSION}", self.account_id
            xml = (
                f'<GetCallerIdentityResponse xmlns="{NS}"><GetCallerIdentityResult>'
                f"<Arn>{escape(arn)}</Arn><UserId>{escape(user_id)}</UserId>"
                f"<Account>{account}</Account></GetCallerIdentityResult>"
                f"<ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata>"
                "</GetCallerIdentityResponse>"
            )
            await send_xml(send, 200, xml.encode())
            return
        message = f"Could not find operation {action} for version 2011-06-15; modelhost answers GetCallerIdentity only."
        await send_xml(send, 400, error_xml("InvalidAction", message, rid))
