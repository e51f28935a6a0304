"""Generic request decoders and response encoders (sagemaker-inference-toolkit semantics, numpy based).

Tables ``DECODERS``/``ENCODERS`` map a bare media type to a function; parameters such as
``; charset=utf-8`` are ignored when matching.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from modelhost.serving.errors import BadRequest, UnsupportedAccept, UnsupportedContentType

JSON = "application/json"
CSV = "text/csv"
JSONLINES = "application/jsonlines"
NPY = "application/x-npy"
NPZ = "application/x-npz"

# The toolkit hands these to input_fn as str, everything else as bytes.
UTF8_TYPES = frozenset({JSON, CSV})


def media_type(value: str) -> str:
    """``'Text/CSV; charset=utf-8'`` -> ``'text/csv'``."""
    if ";" in value:
        value = value.split(";", 1)[0]
    return value.strip().lower()


def _text(data: str | bytes, content_type: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"Failed to decode {content_type} body: not valid UTF-8 ({e})") from e


def _to_array(value: Any, content_type: str) -> np.ndarray:
    try:
        return np.array(value)
    except ValueError as e:  # ragged nesting
        raise BadRequest(f"Failed to decode {content_type} body: {e}") from e


def decode_json(data: str | bytes) -> np.ndarray:
    try:
        value = json.loads(data)
    except ValueError as e:
        raise BadRequest(f"Failed to decode {JSON} body: {e}") from e
    if isinstance(value, dict):
        # TFS/HF style request envelopes.
        if "instances" in value:
            value = value["instances"]
        elif "inputs" in value:
            value = value["inputs"]
    return _to_array(value, JSON)


def decode_csv(data: str | bytes) -> np.ndarray:
    text = _text(data, CSV)
    rows: list[list[float]] = []
    width = -1
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cells = line.split(",")
        try:
            row = [float(c) for c in cells]
        except ValueError:
            col = next(i for i, c in enumerate(cells, 1) if not _is_float(c))
            raise BadRequest(
                f"Failed to decode {CSV} body: row {lineno}, column {col}: "
                f"could not convert {cells[col - 1].strip()!r} to a number"
            ) from None
        if width < 0:
            width = len(row)
        elif len(row) != width:
            raise BadRequest(f"Failed to decode {CSV} body: row {lineno} has {len(row)} columns, expected {width}")
        rows.append(row)
    if not rows:
        raise BadRequest(f"Failed to decode {CSV} body: no data")
    return np.array(rows, dtype=np.float64)


def _is_float(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def decode_jsonlines(data: str | bytes) -> np.ndarray:
    text = _text(data, JSONLINES)
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise BadRequest(f"Failed to decode {JSONLINES} body: line {lineno}: {e}") from e
    return _to_array(rows, JSONLINES)


def decode_npy(data: str | bytes) -> np.ndarray:
    raw = data.encode("latin-1") if isinstance(data, str) else data
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise BadRequest(f"Failed to decode {NPY} body: {e}") from e


def decode_npz(data: str | bytes) -> Any:
    """A scipy sparse matrix (``save_npz`` output, as the toolkit), else the single array or a dict."""
    raw = data.encode("latin-1") if isinstance(data, str) else data
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            if "format" in archive.files and "shape" in archive.files:
                import scipy.sparse  # only needed for sparse payloads

                return scipy.sparse.load_npz(io.BytesIO(raw))
            arrays = {k: archive[k] for k in archive.files}
    except (ValueError, OSError, EOFError) as e:
        raise BadRequest(f"Failed to decode {NPZ} body: {e}") from e
    return next(iter(arrays.values())) if len(arrays) == 1 else arrays


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# One encoder for every answer: json.dumps(default=...) builds a new JSONEncoder per call, which cost
# more than encoding a small prediction (bench/hop.py profile of the instance).
_JSON = json.JSONEncoder(default=_json_default)


def encode_json(obj: Any) -> bytes:
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()  # much faster than the default hook per element
    return _JSON.encode(obj).encode("utf-8")


def encode_csv(obj: Any) -> bytes:
    arr = np.asarray(obj)
    if arr.ndim == 0:
        return f"{arr.item()}\n".encode()
    if arr.ndim == 1:
        return "".join(f"{v}\n" for v in arr.tolist()).encode("utf-8")
    if arr.ndim == 2:
        return "".join(",".join(map(str, row)) + "\n" for row in arr.tolist()).encode("utf-8")
    raise ValueError(f"cannot encode a {arr.ndim}-D array as {CSV}")


def encode_jsonlines(obj: Any) -> bytes:
    rows = obj.tolist() if isinstance(obj, np.ndarray) else obj
    if not isinstance(rows, list):
        rows = [rows]
    return "".join(_JSON.encode(r) + "\n" for r in rows).encode("utf-8")


def encode_npy(obj: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(obj), allow_pickle=False)
    return buf.getvalue()


Decoder = Callable[[str | bytes], Any]
Encoder = Callable[[Any], bytes]

DECODERS: dict[str, Decoder] = {
    JSON: decode_json,
    CSV: decode_csv,
    JSONLINES: decode_jsonlines,
    NPY: decode_npy,
    NPZ: decode_npz,
}
ENCODERS: dict[str, Encoder] = {
    JSON: encode_json,
    CSV: encode_csv,
    JSONLINES: encode_jsonlines,
    NPY: encode_npy,
}


def decode(data: str | bytes, content_type: str, decoders: dict[str, Decoder] = DECODERS) -> Any:
    fn = decoders.get(content_type) or decoders.get(media_type(content_type))
    if fn is None:
        raise UnsupportedContentType(content_type, decoders)
    return fn(data)


def select_accept(accept: str, encoders: dict[str, Encoder] = ENCODERS) -> str:
    """The first supported media type of an Accept header (``a/b, c/d;q=0.5``), or UnsupportedAccept."""
    if accept in encoders:
        return accept
    for part in accept.split(","):
        mt = media_type(part)
        if mt in encoders:
            return mt
    raise UnsupportedAccept(accept, encoders)


def encode(obj: Any, accept: str, encoders: dict[str, Encoder] = ENCODERS) -> tuple[bytes, str]:
    """Encode ``obj`` for ``accept``; returns ``(body, content_type)``."""
    mt = select_accept(accept, encoders)
    return encoders[mt](obj), mt
