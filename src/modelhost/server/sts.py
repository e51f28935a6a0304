"""The one STS call SageMaker clients make: GetCallerIdentity (query protocol, XML).

The sagemaker SDK asks for the account id to name its default bucket
(``sagemaker-<region>-<account>``); we answer with the server's configured account, and, when
requests are authenticated, the signing key's user (``arn:aws:iam::<account>:user/<section>``,
UserId the access key id).
"""

from __future__ import annotations

from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from modelhost.server.asgi import CALLER, BodyTooLarge, Receive, Scope, Send, read_body, request_id

NS = "https://sts.amazonaws.com/doc/2011-06-15/"
MAX_BODY = 64 * 1024


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
    def __init__(self, account_id: str) -> None:
        self.account_id = account_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id(scope)
        try:
            body = await read_body(receive, MAX_BODY)
        except BodyTooLarge:
            await send_xml(send, 400, error_xml("InvalidParameterValue", "Request body too large.", rid))
            return
        params = parse_qs(body.decode() + "&" + scope.get("query_string", b"").decode())
        action = (params.get("Action") or [""])[0]
        if action == "GetCallerIdentity":  # always allowed: it names the verified key's user
            caller = scope.get(CALLER)
            key = getattr(caller, "key", None)
            if key is not None:
                arn, user_id, account = key.arn, key.access_key, key.account
            else:  # requests are not authenticated
                arn, user_id, account = (
                    f"arn:aws:iam::{self.account_id}:user/modelhost",
                    "AIDAMODELHOST",
                    self.account_id,
                )
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
