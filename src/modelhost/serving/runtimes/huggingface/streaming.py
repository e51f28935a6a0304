"""Token streaming for ``text-generation`` / ``text2text-generation`` (a request with ``"stream": true``).

The request is the toolkit's / TGI's: ``{"inputs": "...", "parameters": {"max_new_tokens": ...}, "stream":
true}``. ``model.generate`` runs on its own thread with transformers' ``TextIteratorStreamer``; each piece
of text is one server-sent event as TGI writes them (``data:{"token": {...}, "generated_text": null,
"details": null}``), the last one carries ``generated_text``. Closing the generator (the client went
away) stops generation at the next token through a stopping criterion.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from modelhost.serving.errors import BadRequest

STREAMING_TASKS = ("TextGenerationPipeline", "Text2TextGenerationPipeline")
EVENT_STREAM = "text/event-stream"
# Pipeline-level parameters that mean nothing to ``generate``.
_PIPELINE_ONLY = ("return_full_text", "details", "decoder_input_details", "stop", "watermark", "seed")
FIRST_TOKEN_TIMEOUT = 600.0


def can_stream(model: Any) -> bool:
    return type(model).__name__ in STREAMING_TASKS


def _event(text: str, generated: str | None, special: bool = False) -> bytes:
    token = {"id": None, "text": text, "logprob": None, "special": special}
    return b"data:" + json.dumps({"token": token, "generated_text": generated, "details": None}).encode() + b"\n\n"


def stream_generation(pipe: Any, inputs: Any, parameters: dict[str, Any] | None) -> Iterator[Any]:
    """Server-sent events of the generated text, one per piece the streamer yields."""
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    if not isinstance(inputs, str):
        raise BadRequest('streaming needs "inputs" to be one string')
    params = {k: v for k, v in (parameters or {}).items() if k not in _PIPELINE_ONLY}
    tokenizer, model = pipe.tokenizer, pipe.model
    encoded = tokenizer(inputs, return_tensors="pt").to(model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=FIRST_TOKEN_TIMEOUT)
    stop = threading.Event()

    class _Stopped(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
            return stop.is_set()

    failure: list[BaseException] = []

    def generate() -> None:
        try:
            model.generate(**encoded, **params, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Stopped()]))
        except BaseException as e:  # surfaced to the reader below
            failure.append(e)
            streamer.end()

    thread = threading.Thread(target=generate, name="generate", daemon=True)
    thread.start()
    pieces: list[str] = []
    first = True
    try:
        for text in streamer:
            if failure:
                break
            if not text:
                continue
            pieces.append(text)
            event = _event(text, None)
            yield (event, EVENT_STREAM) if first else event
            first = False
        if failure:
            raise failure[0]
        final = _event("", "".join(pieces), special=True)
        yield (final, EVENT_STREAM) if first else final
    finally:
        stop.set()
        thread.join(timeout=30)
