"""The Hugging Face runtime: the SageMaker HF inference toolkit's defaults (huggingface-pytorch-inference images).

Environment (the model's ``Environment``; see ``loading``): ``HF_TASK``, ``HF_MODEL_ID``, ``HF_MODEL_REVISION``,
``HF_API_TOKEN`` (``HF_TOKEN`` is read by huggingface_hub itself), ``HF_TRUST_REMOTE_CODE``, ``HF_HOME`` /
``HF_HUB_CACHE`` / ``HF_HUB_OFFLINE`` (huggingface_hub's own). Without ``HF_HOME`` the Hub cache is
``MODELHOST_HF_CACHE`` (set by the platform: ``<data-dir>/hf-cache``, shared by all instances).

Requests: ``{"inputs": ..., "parameters": {...}}`` -> ``pipeline(inputs, **parameters)``; decoders and encoders
in ``decoder_encoder``. As in the toolkit, every error of the handler chain (user code included) answers 400
with MMS's JSON error body, which clients see as ``ModelError`` with ``OriginalStatusCode`` 400.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from typing import Any

import numpy as np

from modelhost.serving.batch_predict import run_batched
from modelhost.serving.errors import BadRequest, ModelServerError
from modelhost.serving.runtimes import Runtime
from modelhost.serving.runtimes.huggingface import content_types, decoder_encoder
from modelhost.serving.runtimes.huggingface.decoder_encoder import JsonLines
from modelhost.serving.runtimes.huggingface.loading import configure_hub_cache, load_model
from modelhost.serving.runtimes.huggingface.streaming import can_stream, stream_generation

log = logging.getLogger(__name__)

configure_hub_cache()  # before anything imports huggingface_hub (it reads HF_HOME once)

CSV_REFUSING_TASKS = ("zero-shot-classification", "table-question-answering")
PREDICTION_ERROR_STATUS = 400


def model_fn(model_dir: str) -> Any:
    return load_model(model_dir)


def input_fn(input_data: Any, content_type: str) -> Any:
    task = os.environ.get("HF_TASK")
    if task in CSV_REFUSING_TASKS and content_type == content_types.CSV:
        raise BadRequest(f"content type {content_type} not support with {task}, use different content_type")
    if content_type == content_types.JSON and _batch_transform():
        # A MultiRecord + Line batch of a transform job is several JSON documents, one per line (the
        # toolkit fails on it as invalid JSON): decode it as JSON Lines, one request per line.
        try:
            return decoder_encoder.decode(input_data, content_type)
        except BadRequest:
            lines = decoder_encoder.decode_jsonlines(input_data)
            if len(lines) < 2:
                raise
            return lines
    return decoder_encoder.decode(input_data, content_type)


def _batch_transform() -> bool:
    return os.environ.get("SAGEMAKER_BATCH", "").lower() == "true"


# Pipelines whose output for a list of strings is the list of their outputs for each string (checked per
# class): a JSON Lines request of plain-text lines runs as one batch through them. Text classification
# wraps a single string's result in a list; sentence embeddings return one dict for the whole list.
_BATCHABLE = (
    "FeatureExtractionPipeline",
    "TokenClassificationPipeline",
    "FillMaskPipeline",
    "TextClassificationPipeline",
    "SentenceEmbeddingPipeline",
)


def _predict_lines(data: JsonLines, model: Any) -> JsonLines | None:
    """Run every line in one pipeline call when they are all ``{"inputs": "<text>"}`` with the same
    parameters; None when they are not (each line then runs on its own)."""
    if len(data) < 2 or type(model).__name__ not in _BATCHABLE:
        return None
    first = data[0]
    for item in data:
        if _text_key(item) is None or item.get("parameters") != first.get("parameters"):
            return None
    parameters = first.get("parameters") or {}
    return JsonLines(_run_texts(model, [item["inputs"] for item in data], parameters))


def _text_key(item: Any) -> str | None:
    """``{"inputs": "<text>", "parameters": {...}}`` -> its parameters as a key; None for anything else."""
    if (
        not isinstance(item, dict)
        or not isinstance(item.get("inputs"), str)
        or set(item) - {"inputs", "parameters"}
        or not isinstance(item.get("parameters") or {}, dict)
    ):
        return None
    parameters = item.get("parameters")
    if not parameters:
        return "{}"  # the common case, without a json.dumps per request
    try:
        return json.dumps(parameters, sort_keys=True)
    except (TypeError, ValueError):
        return None


def _run_texts(model: Any, texts: list[str], parameters: dict[str, Any]) -> list[Any]:
    """One pipeline call for several texts -> what each text alone would have produced."""
    kind = type(model).__name__
    if kind == "TextClassificationPipeline" and "batch_size" not in parameters:
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is not None and tokenizer.pad_token is not None:
            parameters = {**parameters, "batch_size": len(texts)}  # padded into one forward pass
    out = model(texts, **parameters)
    if kind == "SentenceEmbeddingPipeline":
        return [{"embeddings": e} for e in out["embeddings"]]
    if kind == "TextClassificationPipeline":
        return [[r] if isinstance(r, dict) else r for r in out]
    return list(out)


def predict_batch(datas: list[Any], model: Any) -> list[Any]:
    """Dynamic batching: the text requests with the same parameters as one pipeline call (for the
    pipelines whose list output is the per-text output); everything else on its own."""
    if type(model).__name__ not in _BATCHABLE:
        return [_try_predict(data, model) for data in datas]

    def combine(items: list[Any]) -> tuple[Any, list[int]]:
        return ([item["inputs"] for item in items], items[0].get("parameters") or {}), [1] * len(items)

    def split(prediction: Any, sizes: list[int]) -> list[Any] | None:
        return prediction if len(prediction) == len(sizes) else None

    return run_batched(datas, model, _predict_group, _text_key, combine, split)


def _predict_group(data: Any, model: Any) -> Any:
    if isinstance(data, tuple):  # a combined group of texts
        texts, parameters = data
        return _run_texts(model, texts, parameters)
    return predict_fn(data, model)


def _try_predict(data: Any, model: Any) -> Any:
    try:
        return predict_fn(data, model)
    except Exception as e:
        return e


def predict_fn(data: Any, model: Any) -> Any:
    """``inputs = data.pop("inputs", data)``, ``parameters = data.pop("parameters", None)``, then the pipeline."""
    if isinstance(data, JsonLines):
        batched = _predict_lines(data, model)
        if batched is not None:
            return batched
        return JsonLines(predict_fn(item, model) for item in data)
    stream = False
    if isinstance(data, dict):
        stream = data.pop("stream", False) is True and can_stream(model)
        inputs = data.pop("inputs", data)
        parameters = data.pop("parameters", None)
    elif isinstance(data, np.ndarray):
        inputs, parameters = data, None
    else:
        raise BadRequest(
            f'the request must be a JSON object like {{"inputs": ..., "parameters": {{...}}}}, '
            f"not a {type(data).__name__} (the toolkit fails with "
            f"{type(data).__name__!r} object has no attribute 'pop')"
        )
    if isinstance(inputs, bytes | bytearray):
        inputs = _audio_for(model, bytes(inputs))
    if stream:  # token by token (TGI's server-sent events); the worker joins them for InvokeEndpoint
        if parameters is not None and not isinstance(parameters, dict):
            raise BadRequest(f'"parameters" must be a JSON object, not {type(parameters).__name__}')
        return stream_generation(model, inputs, parameters)
    if parameters is None:
        return model(inputs)
    if not isinstance(parameters, dict):
        raise BadRequest(f'"parameters" must be a JSON object, not {type(parameters).__name__}')
    return model(inputs, **parameters)


def _audio_for(model: Any, raw: bytes) -> Any:
    """Audio bytes as the float32 mono waveform at the model's sampling rate (what the pipelines get from
    ffmpeg in the DLC; here libsndfile decodes WAV/FLAC/OGG/MP3, and ffmpeg is used only if installed)."""
    extractor = getattr(model, "feature_extractor", None)
    rate = getattr(extractor, "sampling_rate", None)
    if rate is None:
        return raw
    import soundfile

    try:
        audio, source_rate = soundfile.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except Exception as e:
        if shutil.which("ffmpeg"):
            return raw  # the pipeline's own ffmpeg_read
        raise BadRequest(f"Failed to decode audio body: {e}") from e
    wave = audio.mean(axis=1)
    if source_rate != rate:
        wave = _resample(wave, int(source_rate), int(rate))
    return wave.astype(np.float32)


def _resample(wave: np.ndarray, source: int, target: int) -> np.ndarray:
    try:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(source, target)
        return resample_poly(wave, target // g, source // g)
    except ImportError:
        n = int(round(len(wave) * target / source))
        return np.interp(np.linspace(0, len(wave) - 1, n), np.arange(len(wave)), wave)


def output_fn(prediction: Any, accept: str) -> Any:
    if isinstance(prediction, JsonLines) and accept == content_types.JSON and _batch_transform():
        # one output line per input line of a transform batch (AssembleWith=Line ends the last one)
        return "\n".join(decoder_encoder.encode_json(item) for item in prediction)
    return decoder_encoder.encode(prediction, accept)


def _gson(text: str) -> str:
    """Escape as MMS's Gson does (HTML-safe): ' < > & = become \\u0027 \\u003c \\u003e \\u0026 \\u003d."""
    for ch in "'<>&=":
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


def prediction_error(e: Exception) -> ModelServerError:
    """Any exception of a request -> 400 with MMS's error body (the toolkit's PredictionException)."""
    message = e.message if isinstance(e, ModelServerError) else str(e)
    # a request the codecs refused is one line; anything else (pipeline, user code) gets its traceback
    log.error("prediction failed: %s: %s", type(e).__name__, message, exc_info=not isinstance(e, ModelServerError))
    body = {"code": PREDICTION_ERROR_STATUS, "type": "InternalServerException", "message": message}
    return ModelServerError(PREDICTION_ERROR_STATUS, _gson(json.dumps(body, indent=2, ensure_ascii=False)))


RUNTIME = Runtime(
    name="huggingface",
    model_fn=model_fn,
    input_fn=input_fn,
    predict_fn=predict_fn,
    output_fn=output_fn,
    map_error=prediction_error,
    predict_batch=predict_batch,
)
