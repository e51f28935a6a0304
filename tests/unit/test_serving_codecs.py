"""Generic decoders/encoders of modelhost.serving.codecs."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from modelhost.serving import codecs
from modelhost.serving.errors import BadRequest, UnsupportedAccept, UnsupportedContentType


def test_decode_json_array_and_envelopes() -> None:
    assert codecs.decode("[[1, 2], [3, 4]]", "application/json").tolist() == [[1, 2], [3, 4]]
    assert codecs.decode(b'{"instances": [[1.5, 2]]}', "application/json").tolist() == [[1.5, 2.0]]
    assert codecs.decode('{"inputs": [7, 8]}', "application/json; charset=utf-8").tolist() == [7, 8]
    # Objects without an envelope key stay as they are (0-d object array).
    assert codecs.decode('{"a": 1}', "application/json").item() == {"a": 1}


def test_decode_json_malformed_is_bad_request() -> None:
    with pytest.raises(BadRequest) as exc:
        codecs.decode("[1, 2", "application/json")
    assert exc.value.status == 400
    assert "application/json" in exc.value.message
    with pytest.raises(BadRequest):
        codecs.decode("[[1, 2], [3]]", "application/json")  # ragged


def test_decode_csv_shapes() -> None:
    one = codecs.decode("1,2,3.5", "text/csv")
    assert one.shape == (1, 3) and one.dtype == np.float64
    assert one.tolist() == [[1.0, 2.0, 3.5]]
    two = codecs.decode(b"1,2\n3,4\n\n", "Text/CSV; charset=utf-8")
    assert two.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_decode_csv_errors_name_row_and_column() -> None:
    with pytest.raises(BadRequest) as exc:
        codecs.decode("1,2,3\n4,abc,6", "text/csv")
    assert exc.value.message == ("Failed to decode text/csv body: row 2, column 2: could not convert 'abc' to a number")
    with pytest.raises(BadRequest, match="row 2 has 1 columns, expected 2"):
        codecs.decode("1,2\n3", "text/csv")
    with pytest.raises(BadRequest, match="no data"):
        codecs.decode("", "text/csv")


def test_decode_jsonlines_npy_npz() -> None:
    assert codecs.decode("[1, 2]\n[3, 4]\n", "application/jsonlines").tolist() == [[1, 2], [3, 4]]
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.int32).reshape(2, 3))
    arr = codecs.decode(buf.getvalue(), "application/x-npy")
    assert arr.dtype == np.int32 and arr.tolist() == [[0, 1, 2], [3, 4, 5]]
    buf = io.BytesIO()
    np.savez(buf, x=np.array([1.0, 2.0]))
    assert codecs.decode(buf.getvalue(), "application/x-npz").tolist() == [1.0, 2.0]
    with pytest.raises(BadRequest):
        codecs.decode(b"not npy", "application/x-npy")


def test_decode_npz_sparse() -> None:
    import scipy.sparse

    buf = io.BytesIO()
    scipy.sparse.save_npz(buf, scipy.sparse.csr_matrix(np.array([[0, 1.5], [2.0, 0]])))
    out = codecs.decode(buf.getvalue(), "application/x-npz")
    assert out.toarray().tolist() == [[0.0, 1.5], [2.0, 0.0]]


def test_unknown_content_type_is_415() -> None:
    with pytest.raises(UnsupportedContentType) as exc:
        codecs.decode(b"x", "image/png")
    assert exc.value.status == 415
    assert "image/png" in exc.value.message


def test_encoders() -> None:
    assert codecs.encode(np.array([1.5, 2.0]), "application/json") == (b"[1.5, 2.0]", "application/json")
    body, ct = codecs.encode({"a": np.float32(0.5), "b": np.arange(2)}, "application/json")
    assert json.loads(body) == {"a": 0.5, "b": [0, 1]} and ct == "application/json"
    assert codecs.encode(np.array([1.5, 2.0]), "text/csv") == (b"1.5\n2.0\n", "text/csv")
    assert codecs.encode(np.array([[1, 2], [3, 4]]), "text/csv; charset=utf-8") == (b"1,2\n3,4\n", "text/csv")
    assert codecs.encode([[1, 2], [3]], "application/jsonlines")[0] == b"[1, 2]\n[3]\n"
    npy, ct = codecs.encode(np.array([[1.0, 2.0]]), "application/x-npy")
    assert ct == "application/x-npy" and np.load(io.BytesIO(npy)).tolist() == [[1.0, 2.0]]


def test_accept_lists_and_unknown_accept() -> None:
    assert codecs.select_accept("image/png, text/csv;q=0.5") == "text/csv"
    with pytest.raises(UnsupportedAccept) as exc:
        codecs.encode([1], "image/png")
    assert exc.value.status == 406


@pytest.mark.parametrize("content_type", ["application/json", "text/csv", "application/x-npy"])
def test_round_trip(content_type: str) -> None:
    arr = np.array([[0.25, -1.0, 3.0], [4.0, 5.5, 6.0]])
    body, ct = codecs.encode(arr, content_type)
    np.testing.assert_array_equal(codecs.decode(body, ct), arr)
