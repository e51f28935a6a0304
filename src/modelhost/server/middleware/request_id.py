"""One request id per request: made here, kept in ``scope[REQUEST_ID]`` for the handlers (they put it
in their bodies and headers), and added as ``x-amzn-requestid`` to any response that lacks one."""

from __future__ import annotations

from modelhost.server.asgi import REQUEST_ID, ASGIApp, Message, Receive, Scope, Send, new_request_id

HEADER = b"x-amzn-requestid"  # response header names are lower-case (ours and Starlette's)


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = scope[REQUEST_ID] = new_request_id()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers") or []
                for name, _ in headers:
                    if name == HEADER:
                        break
                else:
                    message["headers"] = [*headers, (HEADER, rid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)
