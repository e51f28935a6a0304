"""HF_TASK=conversational on transformers 5 (the pipeline 4.x had): the toolkit's request and response shapes."""

from __future__ import annotations

import json

import pytest

from modelhost.serving.errors import ModelServerError
from modelhost.serving.handler import Handler
from tests import hf_models

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def handler(tmp_path_factory: pytest.TempPathFactory) -> Handler:
    model_dir = hf_models.gpt2(tmp_path_factory.mktemp("chat"))
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_TASK", "conversational")
    try:
        return Handler(model_dir, "huggingface")
    finally:
        mp.undo()


def _ask(handler: Handler, payload: object) -> dict:
    body, content_type, _ = handler.invoke(json.dumps(payload).encode(), "application/json", "application/json")
    assert content_type == "application/json"
    out: dict = json.loads(body)
    return out


def test_toolkit_conversation_shape(handler: Handler) -> None:
    out = _ask(
        handler,
        {
            "inputs": {
                "past_user_inputs": ["hello there"],
                "generated_responses": ["the movie"],
                "text": "is it good",
            },
            "parameters": {"max_new_tokens": 4, "do_sample": False},
        },
    )
    assert isinstance(out["generated_text"], str)
    assert out["conversation"]["past_user_inputs"] == ["hello there", "is it good"]
    assert out["conversation"]["generated_responses"] == ["the movie", out["generated_text"]]


def test_chat_messages_and_greedy_is_deterministic(handler: Handler) -> None:
    messages = [{"role": "user", "content": "this movie is good"}]
    first = _ask(handler, {"inputs": messages, "parameters": {"max_new_tokens": 3, "do_sample": False}})
    again = _ask(handler, {"inputs": messages, "parameters": {"max_new_tokens": 3, "do_sample": False}})
    assert first == again
    assert first["messages"] == [*messages, {"role": "assistant", "content": first["generated_text"]}]


def test_bad_conversation_is_a_client_error(handler: Handler) -> None:
    with pytest.raises(ModelServerError) as info:
        _ask(handler, {"inputs": {"text": "hi", "past_user_inputs": [], "generated_responses": ["orphan reply"]}})
    assert info.value.status == 400
    assert "one reply per input" in info.value.message
