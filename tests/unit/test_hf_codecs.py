"""The Hugging Face runtime's decoders/encoders (toolkit ``decoder_encoder`` semantics), its default predict_fn
and error mapping, task inference, and the ``sagemaker_huggingface_inference_toolkit`` shim. No model is loaded."""

from __future__ import annotations

import base64
import datetime
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from modelhost.serving.errors import BadRequest, ModelServerError
from modelhost.serving.runtimes.huggingface import decoder_encoder as de
from modelhost.serving.runtimes.huggingface import input_fn, predict_fn, prediction_error
from modelhost.serving.runtimes.huggingface.loading import (
    check_weights,
    infer_task_from_model_architecture,
    strtobool,
)


def png(size: tuple[int, int] = (4, 3), mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (10, 20, 30, 255) if mode == "RGBA" else 0).save(buf, format="PNG")
    return buf.getvalue()


# --- decoders -----------------------------------------------------------------------------------------------


def test_json_and_exact_content_types() -> None:
    assert de.decode('{"inputs": "hi", "parameters": {"top_k": 2}}', "application/json") == {
        "inputs": "hi",
        "parameters": {"top_k": 2},
    }
    assert de.decode(b'{"inputs": "hi"}', "application/json") == {"inputs": "hi"}  # bytes from user code
    with pytest.raises(BadRequest, match="Failed to decode application/json body"):
        de.decode("{not json", "application/json")
    # content types are matched exactly, as the toolkit does
    for ct in ("application/json; charset=utf-8", "application/xml", None):
        with pytest.raises(de.UnsupportedFormatError, match="is not supported by this framework"):
            de.decode("{}", ct)


def test_csv_header_rules() -> None:
    assert de.decode('inputs\nI love it\n"a, b"\n', "text/csv") == {"inputs": ["I love it", "a, b"]}
    qa = de.decode("question,context\nWho?,I am Phil\nWhere?,In Nuremberg\n", "text/csv")
    assert qa == {
        "inputs": [{"question": "Who?", "context": "I am Phil"}, {"question": "Where?", "context": "In Nuremberg"}]
    }
    assert de.decode("Inputs,other\nx,1\n", "text/csv") == {"inputs": [{"Inputs": "x", "other": "1"}]}  # header case
    for body in ("text\nI love it\n", "1,2,3\n4,5,6\n", ""):
        with pytest.raises(BadRequest, match="correct CSV with Header columns"):
            de.decode(body, "text/csv")
    with pytest.raises(BadRequest, match="no data rows"):
        de.decode("inputs\n", "text/csv")


def test_csv_refused_for_nested_input_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TASK", "zero-shot-classification")
    with pytest.raises(BadRequest, match="content type text/csv not support with zero-shot-classification"):
        input_fn("inputs\nx\n", "text/csv")
    monkeypatch.setenv("HF_TASK", "text-classification")
    assert input_fn("inputs\nx\n", "text/csv") == {"inputs": ["x"]}


def test_jsonlines_one_request_per_line() -> None:
    reqs = de.decode('{"inputs": "a"}\n\n{"inputs": "b", "parameters": {"k": 1}}\n', "application/jsonlines")
    assert isinstance(reqs, de.JsonLines) and reqs == [{"inputs": "a"}, {"inputs": "b", "parameters": {"k": 1}}]
    with pytest.raises(BadRequest, match="line 2"):
        de.decode('{"inputs": "a"}\n{oops\n', "application/jsonlines")
    with pytest.raises(BadRequest, match="no lines"):
        de.decode("\n", "application/jsonlines")


@pytest.mark.parametrize("ct", ["image/png", "image/x-image", "image/webp"])
def test_images_decode_to_rgb_pil(ct: str) -> None:
    out = de.decode(png(), ct)
    assert set(out) == {"inputs"} and isinstance(out["inputs"], Image.Image)
    assert out["inputs"].mode == "RGB" and out["inputs"].size == (4, 3)


def test_corrupt_image_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="Failed to decode image body"):
        de.decode(b"\x89PNG\r\n\x1a\nnot really", "image/png")
    with pytest.raises(BadRequest, match="Failed to decode image body"):
        de.decode(png()[:40], "image/png")  # truncated


@pytest.mark.parametrize("ct", ["audio/x-flac", "audio/mpeg", "audio/wave", "audio/ogg", "audio/x-audio", "audio/wav"])
def test_audio_passes_bytes(ct: str) -> None:
    assert de.decode(bytearray(b"RIFF...."), ct) == {"inputs": b"RIFF...."}


def test_npy() -> None:
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    buf = io.BytesIO()
    np.save(buf, arr)
    np.testing.assert_array_equal(de.decode(buf.getvalue(), "application/x-npy"), arr)
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object))
    with pytest.raises(BadRequest, match="x-npy"):
        de.decode(pickled.getvalue(), "application/x-npy")  # no pickles from request bodies


# --- encoders -----------------------------------------------------------------------------------------------


def test_json_encoding_numpy_tensors_pil_datetimes() -> None:
    import torch

    img = Image.new("RGB", (2, 2), (255, 0, 0))
    out = de.encode(
        {
            "f": np.float32(0.5),
            "i": np.int64(3),
            "arr": np.array([[1, 2]]),
            "t": torch.tensor([1.5, 2.5]),
            "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
            "img": img,
            "text": "héllo",
        },
        "application/json",
    )
    assert isinstance(out, str)
    assert out.startswith('{"f":0.5,"i":3,"arr":[[1,2]],"t":[1.5,2.5],"when":"2024-01-02 03:04:05","img":"')
    assert '"text":"héllo"' in out  # compact separators, non-ASCII kept
    decoded = Image.open(io.BytesIO(base64.b64decode(json.loads(out)["img"])))
    assert decoded.format == "PNG" and decoded.getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(ValueError):
        de.encode([float("nan")], "application/json")


def test_csv_encoding() -> None:
    rows = [{"label": "POSITIVE", "score": 0.9}, {"label": "NEGATIVE", "score": 0.1}]
    assert de.encode(rows, "text/csv") == "label,score\r\nPOSITIVE,0.9\r\nNEGATIVE,0.1\r\n"
    assert de.encode({"answer": "x", "score": 1}, "text/csv") == "answer,score\r\nx,1\r\n"
    assert de.encode([[rows[0]], [rows[1]]], "text/csv").count("\r\n") == 3  # one list per input: flattened
    with pytest.raises(ValueError, match="needs dicts"):
        de.encode([[0.1, 0.2]], "text/csv")


def test_jsonlines_encoding() -> None:
    batch = de.JsonLines([[{"label": "a"}], {"x": np.float64(1.0)}])
    assert de.encode(batch, "application/jsonlines") == '[{"label":"a"}]\n{"x":1.0}\n'
    assert de.encode([1, 2], "application/jsonlines") == "[1,2]\n"  # not a batch: one line
    assert de.encode(batch, "application/json") == '[[{"label":"a"}],{"x":1.0}]'


def test_npy_and_image_encoding() -> None:
    import torch

    for value in (np.ones((2, 2)), torch.ones(2, 2), [[1.0, 1.0], [1.0, 1.0]]):
        np.testing.assert_array_equal(np.load(io.BytesIO(de.encode(value, "application/x-npy"))), np.ones((2, 2)))
    img = Image.new("RGB", (3, 3))
    assert Image.open(io.BytesIO(de.encode(img, "image/png"))).format == "PNG"
    assert Image.open(io.BytesIO(de.encode(img, "image/x-image"))).format == "PNG"
    assert Image.open(io.BytesIO(de.encode(img, "image/jpeg"))).format == "JPEG"
    with pytest.raises(de.UnsupportedFormatError, match="text/html"):
        de.encode({}, "text/html")


# --- default predict_fn and errors --------------------------------------------------------------------------


def test_predict_fn_inputs_and_parameters() -> None:
    calls: list[tuple[object, dict]] = []

    def pipe(inputs: object, **kw: object) -> dict:
        calls.append((inputs, kw))
        return {"got": inputs}

    assert predict_fn({"inputs": "a", "parameters": {"top_k": 2}}, pipe) == {"got": "a"}
    # no "inputs": the whole body is the input (question answering's {"question", "context"})
    predict_fn({"question": "q", "context": "c"}, pipe)
    out = predict_fn(de.JsonLines([{"inputs": "x"}, {"inputs": "y", "parameters": {"k": 1}}]), pipe)
    assert isinstance(out, de.JsonLines) and out == [{"got": "x"}, {"got": "y"}]
    assert calls == [("a", {"top_k": 2}), ({"question": "q", "context": "c"}, {}), ("x", {}), ("y", {"k": 1})]
    with pytest.raises(BadRequest, match='must be a JSON object like {"inputs"'):
        predict_fn("just a string", pipe)
    with pytest.raises(BadRequest, match='"parameters" must be a JSON object'):
        predict_fn({"inputs": "a", "parameters": [1]}, pipe)


def test_every_error_becomes_mms_400() -> None:
    err = prediction_error(KeyError("gpt_neox"))
    assert isinstance(err, ModelServerError) and err.status == 400
    assert err.message == (
        '{\n  "code": 400,\n  "type": "InternalServerException",\n  "message": "\\u0027gpt_neox\\u0027"\n}'
    )
    assert json.loads(err.message)["message"] == "'gpt_neox'"
    unsupported = prediction_error(de.UnsupportedFormatError("text/plain"))
    assert (
        unsupported.status == 400
        and "Content type text/plain is not supported" in json.loads(unsupported.message)["message"]
    )


def test_task_inference_and_weights(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_TASK", "")  # inference sets HF_TASK (as the toolkit); monkeypatch restores it
    cfg = tmp_path / "config.json"
    for arch, task in [
        ("TapasForQuestionAnswering", "table-question-answering"),
        ("DistilBertForQuestionAnswering", "question-answering"),
        ("BertForSequenceClassification", "text-classification"),
        ("GPT2LMHeadModel", "text-generation"),
        ("MarianMTModel", "text2text-generation"),
        ("T5ForConditionalGeneration", "text2text-generation"),
    ]:
        cfg.write_text(json.dumps({"architectures": [arch]}))
        assert infer_task_from_model_architecture(cfg) == task
        assert os.environ["HF_TASK"] == task
    for config in ({"architectures": ["ViTModel"]}, {}):
        cfg.write_text(json.dumps(config))
        with pytest.raises(ValueError, match="Task couldn't be inferenced from .*Use env `HF_TASK`"):
            infer_task_from_model_architecture(cfg)
    with pytest.raises(FileNotFoundError, match=r"no model weights \(model.safetensors or pytorch_model.bin\) found"):
        check_weights(str(tmp_path))
    (tmp_path / "tf_model.h5").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="tf_model.h5"):
        check_weights(str(tmp_path))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"")
    check_weights(str(tmp_path))
    assert strtobool("True") and not strtobool("false")


def test_toolkit_shim_is_importable() -> None:
    from sagemaker_huggingface_inference_toolkit import content_types, decoder_encoder, transformers_utils

    assert decoder_encoder.decode('{"inputs": 1}', content_types.JSON) == {"inputs": 1}
    assert decoder_encoder.encode({"a": 1}, content_types.JSON) == '{"a":1}'
    assert content_types.X_IMAGE in content_types.VISION_TYPES and content_types.FLAC in content_types.AUDIO_TYPES
    assert transformers_utils.ARCHITECTURES_2_TASK["ForMaskedLM"] == "fill-mask"


@pytest.mark.parametrize(
    ("image", "runtime"),
    [
        (
            "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:"
            "1.13.1-transformers4.26.0-cpu-py39-ubuntu20.04",
            "huggingface",
        ),
        (
            "763104351884.dkr.ecr.eu-west-1.amazonaws.com/huggingface-pytorch-inference:"
            "2.1.0-transformers4.37.0-gpu-py310-cu118-ubuntu20.04",
            "huggingface",
        ),
        ("modelhost/huggingface:latest", "huggingface"),
        (
            "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference-neuronx:"
            "1.13.1-transformers4.36.2-neuronx-py310-sdk2.16.1-ubuntu20.04",
            None,
        ),
        ("763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference:2.1-tgi1.4-gpu-py310", None),
    ],
)
def test_hf_images(image: str, runtime: str | None) -> None:
    from modelhost.serving.images import runtime_for_image

    assert runtime_for_image(image) == runtime


def test_detect_hf_model_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from modelhost.serving.images import detect_runtime

    (tmp_path / "config.json").write_text("{}")
    assert detect_runtime(tmp_path) != "huggingface"  # no weights
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert detect_runtime(tmp_path) == "huggingface"
