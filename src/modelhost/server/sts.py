"""The one STS call SageMaker clients make: GetCallerIdentity (query protocol, XML).

The sagemaker SDK asks for the account id to name its default bucket
(``sagemaker-<region>-<account>``); we answer with the server's configured account.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

NS = "https://sts.amazonaws.com/doc/2011-06-15/"


def is_sts_request(scope: dict) -> bool:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return b"/sts/aws4_request" in value
    return False


class StsApp:
    def __init__(self, account_id: str) -> None:
        self.account_id = account_id

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        params = parse_qs(body.decode() + "&" + scope.get("query_string", b"").decode())
        action = (params.get("Action") or [""])[0]
        request_id = str(uuid.uuid4())
        if action == "GetCallerIdentity":
            status = 200
            xml = (
                f'<GetCallerIdentityResponse xmlns="{NS}"><GetCallerIdentityResult>'
                f"<Arn>arn:aws:iam::{self.account_id}:user/modelhost</Arn><UserId>AIDAMODELHOST</UserId>"
                f"<Account>{self.account_id}</Account></GetCallerIdentityResult>"
                f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
                "</GetCallerIdentityResponse>"
            )
        else:
            status = 400
            xml = (
                f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>InvalidAction</Code>'
                f"<Message>Could not find operation {escape(action)} for version 2011-06-15; modelhost answers "
                f"GetCallerIdentity only.</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
            )
        data = xml.encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/xml"),
                    (b"content-length", str(len(data)).encode()),
                    (b"x-amzn-requestid", request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})
