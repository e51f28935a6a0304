"""Token streaming of the Hugging Face runtime: closing the stream (the server does when its client goes
away; tests/integration/test_batching_streaming.py shows that) stops ``generate`` at the next token."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import torch
    from transformers import pipeline

    from tests.hf_models import gpt2

    torch.set_num_threads(1)
    model_dir: Path = gpt2(tmp_path_factory.mktemp("gpt2"))
    return pipeline("text-generation", model=str(model_dir), device="cpu")


def params(tokens: int) -> dict[str, Any]:
    return {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False, "suppress_tokens": [0, 1, 2, 3, 4]}


def counting_forward(pipe: Any, request: pytest.FixtureRequest) -> list[int]:
    """Counts the model's forward passes (one per generated token)."""
    calls: list[int] = []

    def hook(module: Any, args: Any) -> None:
        calls.append(1)
        time.sleep(0.005)  # slow enough that a generation left running would show

    handle = pipe.model.register_forward_pre_hook(hook)
    request.addfinalizer(handle.remove)
    return calls


def test_closing_the_stream_stops_generation(pipe: Any, request: pytest.FixtureRequest) -> None:
    from modelhost.serving.runtimes.huggingface.streaming import stream_generation

    calls = counting_forward(pipe, request)
    events = stream_generation(pipe, "hello world", params(100))
    first = next(events)
    assert isinstance(first, tuple) and first[1] == "text/event-stream"
    next(events)
    events.close()  # joins the generate thread
    stopped_at = len(calls)
    assert stopped_at < 20, stopped_at
    time.sleep(0.1)
    assert len(calls) == stopped_at  # nothing kept generating after the close


def test_a_whole_stream_ends_with_the_generated_text(pipe: Any, request: pytest.FixtureRequest) -> None:
    from modelhost.serving.runtimes.huggingface.streaming import stream_generation

    calls = counting_forward(pipe, request)
    events = [e[0] if isinstance(e, tuple) else e for e in stream_generation(pipe, "hello world", params(6))]
    assert len(calls) == 6
    parsed = [json.loads(e.removeprefix(b"data:")) for e in events]
    texts = [p["token"]["text"] for p in parsed[:-1]]
    assert parsed[-1]["generated_text"] == "".join(texts) and parsed[-1]["token"]["special"] is True
    assert all(p["generated_text"] is None for p in parsed[:-1])
