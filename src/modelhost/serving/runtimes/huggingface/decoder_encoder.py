"""Request decoders and response encoders of the SageMaker Hugging Face inference toolkit.

Same contract as ``sagemaker_huggingface_inference_toolkit.decoder_encoder``: ``decode(content, content_type)``
and ``encode(prediction, accept)``, content types matched exactly (``application/json; charset=utf-8`` is not
``application/json``), JSON/CSV/jsonlines encoders return ``str``, NPY/image encoders ``bytes``.

Differences from the toolkit, all additive or safer:

* ``application/jsonlines``: one request object per line, decoded to a :class:`JsonLines` list; the runtime's
  default ``predict_fn`` runs each line on its own and the ``application/jsonlines`` encoder writes one output
  line per input line (any other prediction is one line).
* ``audio/wav``, ``audio/x-wav``, ``audio/flac`` are accepted beside the toolkit's audio types.
* ``application/x-npy`` bodies are loaded with ``allow_pickle=False`` (a pickled array in a request body
  would run arbitrary code).
* Errors carry a reason: a corrupt image or a CSV without the required header is a :class:`BadRequest`.

PIL and torch are imported only when an image is decoded or encoded, so user code importing this module
stays cheap.
"""

from __future__ import annotations

import base64
import csv
import datetime
import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from modelhost.serving.errors import BadRequest, ModelServerError
from modelhost.serving.runtimes.huggingface import content_types

CSV_HEADER_COLUMNS = ("question", "context", "inputs")


class UnsupportedFormatError(ModelServerError):
    """A content type (or accept type) without a decoder (encoder); the HF runtime answers it with 400."""

    def __init__(self, content_type: str | None, supported: list[str] | None = None) -> None:
        msg = (
            f"Content type {content_type} is not supported by this framework. Please implement input_fn to "
            "deserialize the request data or an output_fn to serialize the response."
        )
        if supported:
            msg += f" Supported: {', '.join(supported)}."
        super().__init__(415, msg)
        self.content_type = content_type


class JsonLines(list):
    """Requests decoded from (or predictions bound for) ``application/jsonlines``: one element per line."""


def _text(content: str | bytes | bytearray, content_type: str) -> str:
    if isinstance(content, str):
        return content
    try:
        return bytes(content).decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"Failed to decode {content_type} body: not valid UTF-8 ({e})") from e


def decode_json(content: str | bytes | bytearray) -> Any:
    try:
        return json.loads(content)
    except ValueError as e:
        raise BadRequest(f"Failed to decode {content_types.JSON} body: {e}") from e


def decode_csv(string_like: str | bytes | bytearray) -> dict[str, Any]:
    """CSV with a header row: an ``inputs`` column -> ``{"inputs": [values]}``, otherwise (e.g. ``question`` and
    ``context`` columns for question answering) -> ``{"inputs": [row dicts]}``."""
    text = _text(string_like, content_types.CSV)
    lines = text.splitlines()
    first = lines[0].lower() if lines else ""
    if not any(header in first for header in CSV_HEADER_COLUMNS):
        raise BadRequest(
            "You need to provide the correct CSV with Header columns to use it with the inference toolkit default "
            "handler: the first row must name an `inputs` column (or `question` and `context` columns)."
        )
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise BadRequest(f"Failed to decode {content_types.CSV} body: a header row but no data rows")
    if "inputs" in rows[0]:
        return {"inputs": [row["inputs"] for row in rows]}
    return {"inputs": rows}


def decode_jsonlines(content: str | bytes | bytearray) -> JsonLines:
    text = _text(content, content_types.JSONLINES)
    requests = JsonLines()
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                requests.append(json.loads(line))
            except ValueError as e:
                raise BadRequest(f"Failed to decode {content_types.JSONLINES} body: line {lineno}: {e}") from e
    if not requests:
        raise BadRequest(f"Failed to decode {content_types.JSONLINES} body: no lines")
    return requests


def decode_image(bpayload: bytes | bytearray | str) -> dict[str, Any]:
    """An image body -> ``{"inputs": PIL.Image}`` in RGB."""
    from PIL import Image, UnidentifiedImageError

    raw = bpayload.encode("latin-1") if isinstance(bpayload, str) else bytes(bpayload)
    try:
        image = Image.open(io.BytesIO(raw)).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadRequest(f"Failed to decode image body: {e}") from e
    return {"inputs": image}


def decode_audio(bpayload: bytes | bytearray | str) -> dict[str, Any]:
    """An audio body -> ``{"inputs": bytes}``; the runtime decodes it for the pipeline."""
    raw = bpayload.encode("latin-1") if isinstance(bpayload, str) else bytes(bpayload)
    return {"inputs": raw}


def decode_npy(npy_array: bytes | bytearray | str) -> np.ndarray:
    raw = npy_array.encode("latin-1") if isinstance(npy_array, str) else bytes(npy_array)
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise BadRequest(f"Failed to decode {content_types.NPY} body: {e}") from e


def _default(obj: Any) -> Any:
    """JSON for what pipelines return beyond plain Python: numpy scalars/arrays, tensors, datetimes, images."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if hasattr(obj, "tolist"):  # numpy arrays, torch tensors
        return obj.tolist()
    if isinstance(obj, datetime.datetime | datetime.date):
        return str(obj)
    if _is_pil_image(obj):
        out = io.BytesIO()
        obj.save(out, format="PNG")
        return base64.b64encode(out.getvalue()).decode("utf-8")
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _is_pil_image(obj: Any) -> bool:
    module = type(obj).__module__
    if not module.startswith("PIL."):
        return False
    from PIL import Image

    return isinstance(obj, Image.Image)


# One encoder for every answer: json.dumps with options builds a JSONEncoder (and its C encoder) per call.
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default)


def encode_json(content: Any, accept_type: str | None = None) -> str:
    """Compact JSON (``","``/``":"`` separators, non-ASCII kept, NaN refused) as the toolkit writes it."""
    return _JSON.encode(content)


def encode_jsonlines(content: Any, accept_type: str | None = None) -> str:
    """One JSON line per element of a :class:`JsonLines` prediction; any other prediction is one line."""
    items = content if isinstance(content, JsonLines) else [content]
    return "".join(encode_json(item) + "\n" for item in items)


def encode_csv(content: Any, accept_type: str | None = None) -> str:
    """Pipeline results (dicts, or lists of dicts) as CSV with a header row of their keys."""
    if isinstance(content, dict):
        rows: list[Any] = [content]
    else:
        rows = list(content)
        if rows and all(isinstance(r, list | tuple) for r in rows):  # one list per input: flatten
            rows = [item for r in rows for item in r]
    if not rows or not all(isinstance(r, dict) for r in rows):
        kind = type(rows[0]).__name__ if rows else "nothing"
        raise ValueError(f"{content_types.CSV} output needs dicts (one per row); the prediction holds {kind}")
    header: dict[str, None] = {}
    for row in rows:
        header.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, list(header))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def encode_npy(array_like: Any, accept_type: str | None = None) -> bytes:
    if hasattr(array_like, "detach"):  # torch tensor
        array_like = array_like.detach().cpu().numpy()
    buffer = io.BytesIO()
    np.save(buffer, array_like)
    return buffer.getvalue()


def encode_image(image: Any, accept_type: str = content_types.PNG) -> bytes:
    """A PIL image as the bytes of ``accept_type`` (``image/x-image`` -> PNG)."""
    fmt = "PNG" if accept_type == content_types.X_IMAGE else accept_type.split("/")[-1].upper()
    if not _is_pil_image(image):
        raise ValueError(f"{accept_type} output needs a PIL image; the prediction is a {type(image).__name__}")
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


Decoder = Callable[[Any], Any]
Encoder = Callable[[Any, str], Any]

DECODERS: dict[str, Decoder] = {
    content_types.NPY: decode_npy,
    content_types.CSV: decode_csv,
    content_types.JSON: decode_json,
    content_types.JSONLINES: decode_jsonlines,
    **dict.fromkeys(content_types.VISION_TYPES, decode_image),
    **dict.fromkeys(content_types.AUDIO_TYPES, decode_audio),
    # modelhost additions: the common spellings of the same audio types
    **dict.fromkeys(("audio/wav", "audio/x-wav", "audio/flac"), decode_audio),
}
ENCODERS: dict[str, Encoder] = {
    content_types.NPY: encode_npy,
    content_types.CSV: encode_csv,
    content_types.JSON: encode_json,
    content_types.JSONLINES: encode_jsonlines,
    **dict.fromkeys(content_types.VISION_TYPES, encode_image),
}


def decode(content: Any, content_type: str | None = content_types.JSON) -> Any:
    """Decode a request body of ``content_type`` into what the default ``predict_fn`` takes."""
    decoder = DECODERS.get(content_type) if content_type is not None else None
    if decoder is None:
        raise UnsupportedFormatError(content_type, list(DECODERS))
    return decoder(content)


def encode(content: Any, accept_type: str | None = content_types.JSON) -> Any:
    """Encode a prediction for ``accept_type``: ``str`` for JSON/CSV/jsonlines, ``bytes`` otherwise."""
    encoder = ENCODERS.get(accept_type) if accept_type is not None else None
    if encoder is None:
        raise UnsupportedFormatError(accept_type, list(ENCODERS))
    return encoder(content, accept_type)  # type: ignore[arg-type]
