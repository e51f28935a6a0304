"""Asynchronous inference notifications: the message, and its delivery to SNS topics and webhooks.

A topic is either an SNS ARN, published through the SNS API (boto3) at
``MODELHOST_SNS_ENDPOINT_URL`` (moto's server, LocalStack, or real SNS when unset credentials
allow), or an ``http(s)://`` URL (a modelhost extension of the service model's pattern) that
receives the same JSON message by POST. Both are retried with exponential back-off; a message
that still cannot be delivered is given up (the caller counts it in ``NotificationFailures``).

Webhooks are not called on loopback, link-local, private (RFC 1918, fc00::/7) or unspecified
addresses (server-side request forgery) unless the host (``host`` or ``host:port``) or a URL prefix
is listed in ``MODELHOST_WEBHOOK_ALLOW`` (comma-separated): CreateEndpointConfig refuses such a topic
(``resources/webhooks.py``), and every delivery checks the address it actually connected to, so a DNS
answer that changed since is refused too. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import ssl
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from modelhost.hosting.asyncq.items import Item
from modelhost.resources.webhooks import ALLOW_ENV, BLOCKED_KINDS, blocked_address, webhook_allowed

log = logging.getLogger("modelhost.notify")

SNS_ARN_PREFIX = "arn:aws"
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)  # between attempts: 6 attempts in all over ~8 s
HTTP_TIMEOUT = 10.0


def iso_millis(t: float) -> str:
    """ISO-8601 UTC with milliseconds, as the notification's eventTime/receivedTime."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(t * 1000) % 1000:03d}Z"


def is_webhook(topic: str) -> bool:
    return topic.startswith(("http://", "https://"))


class WebhookRefused(Exception):
    """The webhook's address is internal and not allowed (not retried)."""


class _CheckedHTTP(http.client.HTTPConnection):
    """Checks the address it connected to before anything is sent."""

    allowed = False

    def connect(self) -> None:
        super().connect()
        if not self.allowed:
            peer = self.sock.getpeername()[0]
            if blocked_address(peer):
                self.sock.close()
                raise WebhookRefused(f"{self.host} connected to {peer}, {BLOCKED_KINDS} (not in {ALLOW_ENV})")


class _CheckedHTTPS(http.client.HTTPSConnection, _CheckedHTTP):
    pass


class Notifier:
    def __init__(
        self,
        sns_endpoint_url: str | None,
        region: str,
        delays: tuple[float, ...] = RETRY_DELAYS,
        webhook_allow: str = "",
    ) -> None:
        self.sns_endpoint_url = sns_endpoint_url or None
        self.region = region
        self.delays = delays
        self.webhook_allow = webhook_allow
        self._clients: dict[str, Any] = {}

    async def send(self, topic: str, message: str) -> bool:
        """Deliver ``message`` to ``topic`` with retries; False when every attempt failed."""
        last: Exception | None = None
        for attempt in range(len(self.delays) + 1):
            try:
                if is_webhook(topic):
                    await asyncio.to_thread(self._post, topic, message)
                else:
                    await asyncio.to_thread(self._publish, topic, message)
                return True
            except WebhookRefused as exc:
                log.warning("notification to %s refused: %s", topic, exc)
                return False
            except Exception as exc:  # any delivery problem is retried, then reported
                last = exc
            if attempt < len(self.delays):
                await asyncio.sleep(self.delays[attempt])
        log.warning("notification to %s failed after %d attempts: %s", topic, len(self.delays) + 1, last)
        return False

    def _post(self, url: str, message: str) -> None:
        parts = urlsplit(url)
        conn: _CheckedHTTP
        if parts.scheme == "https":
            conn = _CheckedHTTPS(
                parts.hostname or "", parts.port, timeout=HTTP_TIMEOUT, context=ssl.create_default_context()
            )
        else:
            conn = _CheckedHTTP(parts.hostname or "", parts.port, timeout=HTTP_TIMEOUT)
        conn.allowed = webhook_allowed(url, self.webhook_allow)
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        try:
            conn.request("POST", path, body=message.encode(), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status >= 300:
                raise OSError(f"webhook answered {resp.status}")
        finally:
            conn.close()

    def _sns(self, region: str) -> Any:
        client = self._clients.get(region)
        if client is None:
            import boto3
            from botocore.config import Config

            session = boto3.Session()
            creds = (
                {}
                if session.get_credentials() is not None
                else {"aws_access_key_id": "modelhost", "aws_secret_access_key": "modelhost"}
            )
            client = session.client(
                "sns",
                region_name=region,
                endpoint_url=self.sns_endpoint_url,
                config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=5, read_timeout=10),
                **creds,
            )
            self._clients[region] = client
        return client

    def _publish(self, arn: str, message: str) -> None:
        parts = arn.split(":")
        region = parts[3] if len(parts) > 3 and parts[3] else self.region
        self._sns(region).publish(TopicArn=arn, Message=message)


# The message SageMaker sends to each configured topic when an async endpoint is created.
TEST_NOTIFICATION = json.dumps({"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "TestNotification"})


def notification(item: Item, outcome: dict[str, Any], region: str) -> dict[str, Any] | None:
    """The notification to store with an outcome (``{"topic", "message"}``), or None without a topic.

    The body is reference 4.3's. ``outcome["embedded"]`` (the response, base64) is taken out of
    the outcome: it is only ever part of the message, never stored alone."""
    spec = item.spec
    ok = outcome["status"] == "Completed"
    topic = spec.get("success_topic") if ok else spec.get("error_topic")
    embedded = outcome.pop("embedded", None)
    if not topic:
        return None
    request: dict[str, Any] = {}
    if ok and spec.get("content_type") is not None:
        request["contentType"] = spec["content_type"]
    request["endpointName"] = item.endpoint
    if spec.get("input"):
        request["inputLocation"] = spec["input"]
    message: dict[str, Any] = {
        "awsRegion": region,
        "eventTime": iso_millis(outcome["time"]),
        "receivedTime": iso_millis(item.received),
        "invocationStatus": "Completed" if ok else "Failed",
    }
    if not ok:
        message["failureReason"] = outcome["reason"]
    message["requestParameters"] = request
    if ok:
        message["responseParameters"] = {"contentType": outcome["content_type"], "outputLocation": outcome["location"]}
    elif outcome.get("location"):
        message["responseParameters"] = {"failureLocation": outcome["location"]}
    message.update(
        inferenceId=item.inference_id, eventVersion="1.0", eventSource="aws:sagemaker", eventName="InferenceResult"
    )
    wanted = "SUCCESS_NOTIFICATION_TOPIC" if ok else "ERROR_NOTIFICATION_TOPIC"
    if wanted in spec.get("include", []) and embedded is not None:
        # The key is not documented [unverified]: UTF-8 text as is, anything else base64.
        try:
            message["responseBody"] = {"content": base64.b64decode(embedded).decode("utf-8"), "encoding": "UTF8"}
        except UnicodeDecodeError:
            message["responseBody"] = {"content": embedded, "encoding": "BASE64"}
    return {"topic": topic, "message": json.dumps(message)}
