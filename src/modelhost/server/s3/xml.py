"""S3's XML: the reply record, element helpers, timestamps, and the error document with S3's codes
and statuses."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from typing import IO

from modelhost.store.buckets import S3StoreError, error_class

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
OWNER_ID = "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a"
OWNER_NAME = "modelhost"

MalformedXML = error_class("MalformedXML")
InvalidURI = error_class("InvalidURI")
MethodNotAllowed = error_class("MethodNotAllowed")
NotImplementedError_ = error_class("NotImplemented")
MissingContentLength = error_class("MissingContentLength")
IncompleteBody = error_class("IncompleteBody")
InvalidRange = error_class("InvalidRange")
MaxMessageLengthExceeded = error_class("MaxMessageLengthExceeded")
InternalError = error_class("InternalError")

STATUS = {
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "BucketAlreadyOwnedByYou": 409,
    "BucketAlreadyExists": 409,
    "BucketNotEmpty": 409,
    "InvalidRange": 416,
    "PreconditionFailed": 412,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NotImplemented": 501,
    "InternalError": 500,
    "AccessDenied": 403,
    "SignatureDoesNotMatch": 403,
    "InvalidAccessKeyId": 403,
    "RequestTimeTooSkewed": 403,
}
MALFORMED = "The XML you provided was not well-formed or did not validate against our published schema"


@dataclass
class Reply:
    """A response: XML or empty ``body``, or ``length`` bytes streamed from ``file``."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    file: IO[bytes] | None = None  # stream ``length`` bytes from the file's position
    length: int = 0


def xml_reply(root: ET.Element) -> Reply:
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return Reply(200, [("content-type", "application/xml")], body)


def element(tag: str) -> ET.Element:
    return ET.Element(tag, xmlns=NS)


# Characters XML 1.0 cannot carry even as references (C0 controls but tab/newline/CR, lone surrogates, FFFE/FFFF).
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(text: str) -> str:
    """``text`` with the characters XML cannot carry percent-encoded (a key like ``a\x1fb`` reads ``a%1Fb``), so
    every answer parses; a client that needs such keys exactly lists with ``encoding-type=url``."""
    return NOT_XML.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8", "surrogatepass")), text)


def sub(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        value = text if isinstance(text, str) else str(text).lower() if isinstance(text, bool) else str(text)
        el.text = xml_text(value) if NOT_XML.search(value) else value
    return el


def parse_xml(body: bytes) -> ET.Element:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise MalformedXML(MALFORMED) from None
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    return root


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def quoted(etag: str) -> str:
    return f'"{etag}"'


def error_reply(err: S3StoreError, request_id: str, resource: str) -> Reply:
    status = STATUS.get(err.code, 400)
    root = ET.Element("Error")
    sub(root, "Code", err.code)
    sub(root, "Message", err.message)
    for name, value in err.fields.items():
        sub(root, name.replace("_", "-"), value)
    if "Key" not in err.fields and "BucketName" not in err.fields:
        sub(root, "Resource", resource)
    sub(root, "RequestId", request_id)
    sub(root, "HostId", request_id)
    reply = xml_reply(root)
    reply.status = status
    if err.code == "InvalidRange" and "ActualObjectSize" in err.fields:
        reply.headers.append(("content-range", f"bytes */{err.fields['ActualObjectSize']}"))
    return reply
