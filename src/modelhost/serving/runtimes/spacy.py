"""The spaCy runtime (``modelhost/spacy``): a spaCy pipeline, named entities out.

Model: ``SPACY_MODEL`` (a path relative to the model dir or absolute, else an installed pipeline package
name, e.g. one that ``code/requirements.txt`` installs), or else the one spaCy pipeline directory
(``nlp.to_disk`` output: ``config.cfg`` + ``meta.json``) in the model artifact: its root or a directory
below it (``model-best`` then ``model-last`` win when there are several).

Requests and responses (``application/json`` out):

* ``{"text": "..."}`` -> the entities, as the Lambda handler of "Deploying serverless spaCy transformer
  model with AWS Lambda": ``[{"text": ..., "label": ..., "start": <char>, "end": <char>}, ...]``;
  ``{"text": ["...", ...]}`` -> one such list per text;
* ``{"inputs": "..."}``, a JSON string, or a ``text/plain`` body -> one document object
  ``{"text", "entities": [...as above], "tokens": [{"text", "start", "end", "lemma", "pos", "tag", "dep",
  "head", "ent_type", "ent_iob"}], "labels": [distinct entity labels, in order of appearance]}`` plus
  ``"cats"`` (label -> score) when the pipeline has a text classifier;
* ``{"inputs": ["...", ...]}`` or a JSON list of strings -> a list of document objects;
* ``application/jsonlines`` requests: one JSON request per line -> one response per line (as jsonlines, or a
  JSON array when the Accept is JSON).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import spacy
from spacy.language import Language
from spacy.tokens import Doc

from modelhost.serving import codecs
from modelhost.serving.errors import BadRequest, ModelLoadError, UnsupportedContentType
from modelhost.serving.runtimes import Runtime

SPACY_MODEL_ENV = "SPACY_MODEL"
TEXT = "text/plain"
CONTENT_TYPES = (codecs.JSON, TEXT, codecs.JSONLINES)
ACCEPT_TYPES = (codecs.JSON, codecs.JSONLINES)
PREFERRED_DIRS = ("model-best", "model-last")
SEARCH_DEPTH = 3


def _is_pipeline(path: Path) -> bool:
    return (path / "config.cfg").is_file() and (path / "meta.json").is_file()


def find_pipeline(model_dir: Path) -> Path | None:
    """The spaCy pipeline directory of an artifact: its root, else the one below it (model-best/-last first)."""
    if _is_pipeline(model_dir):
        return model_dir
    found: list[Path] = []
    level = [model_dir]
    for _ in range(SEARCH_DEPTH):
        nxt: list[Path] = []
        for d in level:
            for child in sorted(d.iterdir()):
                if child.is_dir() and not child.name.startswith(".") and child.name != "code":
                    (found if _is_pipeline(child) else nxt).append(child)
        if found:
            break
        level = nxt
    if len(found) > 1:
        for name in PREFERRED_DIRS:
            preferred = [p for p in found if p.name == name]
            if len(preferred) == 1:
                return preferred[0]
        names = ", ".join(str(p.relative_to(model_dir)) for p in found)
        raise ModelLoadError(f"Several spaCy pipelines in the model artifact ({names}); set {SPACY_MODEL_ENV} to one")
    return found[0] if found else None


def _load(target: str | Path) -> Language:
    try:
        return spacy.load(target)
    except (OSError, ValueError, ImportError) as e:
        message = str(e)
        if "Can't find factory" in message or "E002" in message:
            message += " (install the package providing it, e.g. spacy-transformers, with code/requirements.txt)"
        raise ModelLoadError(f"Failed to load spaCy pipeline {target}: {type(e).__name__}: {message}") from e


def model_fn(model_dir: str) -> Language:
    base = Path(model_dir)
    name = os.environ.get(SPACY_MODEL_ENV, "").strip()
    if name:
        path = Path(name) if Path(name).is_absolute() else base / name
        return _load(path if path.exists() else name)
    pipeline = find_pipeline(base)
    if pipeline is None:
        raise ModelLoadError(
            f"No spaCy pipeline in the model artifact: expected a directory with config.cfg and meta.json "
            f"(nlp.to_disk output) or {SPACY_MODEL_ENV}=<installed pipeline package>"
        )
    return _load(pipeline)


@dataclass(frozen=True)
class SpacyRequest:
    """Texts to run and how to answer: ``"entities"`` (the {"text": ...} form) or ``"doc"`` objects."""

    texts: list[str]
    form: str
    single: bool


def _texts(value: Any, what: str) -> tuple[list[str], bool]:
    if isinstance(value, str):
        return [value], True
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value), False
    raise BadRequest(f"{what} must be a string or a list of strings")


def parse_request(value: Any) -> SpacyRequest:
    """A decoded JSON request -> SpacyRequest."""
    if isinstance(value, dict):
        if "text" in value:
            texts, single = _texts(value["text"], '"text"')
            return SpacyRequest(texts, "entities", single)
        if "inputs" in value:
            texts, single = _texts(value["inputs"], '"inputs"')
            return SpacyRequest(texts, "doc", single)
        raise BadRequest('expected {"text": ...} or {"inputs": ...}: a string or a list of strings')
    texts, single = _texts(value, "the request")
    return SpacyRequest(texts, "doc", single)


def input_fn(data: Any, content_type: str) -> Any:
    mt = codecs.media_type(content_type)
    text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
    if mt == TEXT:
        return SpacyRequest([text], "doc", True)
    if mt == codecs.JSON:
        try:
            value = json.loads(text)
        except ValueError as e:
            raise BadRequest(f"Failed to decode {codecs.JSON} body: {e}") from e
        return parse_request(value)
    if mt == codecs.JSONLINES:
        try:
            values = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as e:
            raise BadRequest(f"Failed to decode {codecs.JSONLINES} body: {e}") from e
        return [parse_request(v) for v in values]
    raise UnsupportedContentType(content_type, CONTENT_TYPES)


def entities(doc: Doc) -> list[dict[str, Any]]:
    return [{"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char} for e in doc.ents]


def document(doc: Doc) -> dict[str, Any]:
    ents = entities(doc)
    out: dict[str, Any] = {
        "text": doc.text,
        "entities": ents,
        "tokens": [
            {
                "text": t.text,
                "start": t.idx,
                "end": t.idx + len(t.text),
                "lemma": t.lemma_,
                "pos": t.pos_,
                "tag": t.tag_,
                "dep": t.dep_,
                "head": t.head.i,
                "ent_type": t.ent_type_,
                "ent_iob": t.ent_iob_,
            }
            for t in doc
        ],
        "labels": list(dict.fromkeys(e["label"] for e in ents)),
    }
    if doc.cats:
        out["cats"] = dict(doc.cats)
    return out


def _answer(nlp: Language, request: SpacyRequest) -> Any:
    docs = list(nlp.pipe(request.texts))
    results = [entities(d) if request.form == "entities" else document(d) for d in docs]
    return results[0] if request.single else results


def predict_fn(data: Any, model: Language) -> Any:
    if isinstance(data, SpacyRequest):
        return _answer(model, data)
    if isinstance(data, list) and all(isinstance(r, SpacyRequest) for r in data):
        return JsonLines([_answer(model, r) for r in data])
    return _answer(model, parse_request(data))  # a user input_fn returned plain JSON data


class JsonLines(list[Any]):
    """One response per jsonlines request line."""


def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    """JSON, or jsonlines (one line per request line; a single request is one line)."""
    mt = codecs.select_accept(accept, {t: codecs.ENCODERS[t] for t in ACCEPT_TYPES})
    if mt == codecs.JSONLINES:
        rows = list(prediction) if isinstance(prediction, JsonLines) else [prediction]
        return codecs.encode_jsonlines(rows), mt
    return codecs.encode_json(list(prediction) if isinstance(prediction, JsonLines) else prediction), mt


RUNTIME = Runtime(name="spacy", model_fn=model_fn, input_fn=input_fn, predict_fn=predict_fn, output_fn=output_fn)
