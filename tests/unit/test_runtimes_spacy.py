"""spaCy runtime: pipeline discovery, request forms and the response shapes (the seed article's entity list)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy
from spacy.language import Language

from modelhost.serving.errors import BadRequest, ModelLoadError, UnsupportedContentType
from modelhost.serving.handler import Handler
from modelhost.serving.runtimes import get_runtime
from modelhost.serving.runtimes.spacy import find_pipeline

RT = get_runtime("spacy")
TEXT = "Acme Corp hired Jane Doe in Berlin."
ENTS = [
    {"text": "Acme Corp", "label": "ORG", "start": 0, "end": 9},
    {"text": "Jane Doe", "label": "PERSON", "start": 16, "end": 24},
    {"text": "Berlin", "label": "GPE", "start": 28, "end": 34},
]


def _pipeline() -> Language:
    """A blank English pipeline with an entity ruler: deterministic entities, no trained model needed."""
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(  # type: ignore[attr-defined]
        [
            {"label": "ORG", "pattern": "Acme Corp"},
            {"label": "PERSON", "pattern": "Jane Doe"},
            {"label": "GPE", "pattern": "Berlin"},
        ]
    )
    return nlp


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("spacy-model")
    _pipeline().to_disk(model_dir / "model-last")
    return model_dir


@pytest.fixture(scope="module")
def nlp(pipeline_dir: Path) -> Language:
    return RT.model_fn(str(pipeline_dir))


def _call(
    nlp: Language, body: str | bytes, content_type: str = "application/json", accept: str = "application/json"
) -> object:
    out, ct = RT.output_fn(RT.predict_fn(RT.input_fn(body, content_type), nlp), accept)
    assert ct == accept
    if accept == "application/jsonlines":
        return [json.loads(line) for line in out.decode().splitlines()]
    return json.loads(out)


def test_text_request_answers_the_seed_shape(nlp: Language) -> None:
    """{"text": ...} -> the Lambda handler's list of {text, label, start, end}."""
    assert _call(nlp, json.dumps({"text": TEXT})) == ENTS
    assert _call(nlp, json.dumps({"text": [TEXT, "Nothing here."]})) == [ENTS, []]


def test_document_objects(nlp: Language) -> None:
    doc = _call(nlp, json.dumps({"inputs": TEXT}))
    assert isinstance(doc, dict)
    assert set(doc) == {"text", "entities", "tokens", "labels"}
    assert doc["text"] == TEXT and doc["entities"] == ENTS and doc["labels"] == ["ORG", "PERSON", "GPE"]
    assert [t["text"] for t in doc["tokens"]] == ["Acme", "Corp", "hired", "Jane", "Doe", "in", "Berlin", "."]
    first = doc["tokens"][0]
    assert first["start"] == 0 and first["end"] == 4 and first["ent_type"] == "ORG" and first["ent_iob"] == "B"
    assert set(first) == {"text", "start", "end", "lemma", "pos", "tag", "dep", "head", "ent_type", "ent_iob"}

    assert _call(nlp, TEXT.encode(), "text/plain") == doc
    assert _call(nlp, json.dumps(TEXT)) == doc
    docs = _call(nlp, json.dumps([TEXT, "Berlin"]))
    assert isinstance(docs, list) and docs[0] == doc and docs[1]["labels"] == ["GPE"]
    assert _call(nlp, json.dumps({"inputs": [TEXT]})) == [doc]


def test_jsonlines(nlp: Language) -> None:
    body = json.dumps({"text": TEXT}) + "\n" + json.dumps({"text": "Berlin"}) + "\n"
    rows = _call(nlp, body, "application/jsonlines", "application/jsonlines")
    assert rows == [ENTS, [{"text": "Berlin", "label": "GPE", "start": 0, "end": 6}]]
    assert _call(nlp, body, "application/jsonlines", "application/json") == rows


@pytest.mark.parametrize("body", ['{"foo": 1}', '{"text": 1}', "[1, 2]", "{"])
def test_bad_requests(nlp: Language, body: str) -> None:
    with pytest.raises(BadRequest):
        RT.input_fn(body, "application/json")


def test_unsupported_content_type(nlp: Language) -> None:
    with pytest.raises(UnsupportedContentType):
        RT.input_fn(b"1,2", "text/csv")


def test_find_pipeline(tmp_path: Path, pipeline_dir: Path) -> None:
    assert find_pipeline(pipeline_dir) == pipeline_dir / "model-last"
    assert find_pipeline(tmp_path) is None
    for name in ("a", "b"):
        (tmp_path / "x" / name).mkdir(parents=True)
        (tmp_path / "x" / name / "config.cfg").write_text("")
        (tmp_path / "x" / name / "meta.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="Several spaCy pipelines"):
        find_pipeline(tmp_path)
    (tmp_path / "x" / "model-best").mkdir()
    (tmp_path / "x" / "model-best" / "config.cfg").write_text("")
    (tmp_path / "x" / "model-best" / "meta.json").write_text("{}")
    assert find_pipeline(tmp_path) == tmp_path / "x" / "model-best"


def test_no_pipeline_and_spacy_model_env(tmp_path: Path, pipeline_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPACY_MODEL", raising=False)
    with pytest.raises(ModelLoadError, match="No spaCy pipeline"):
        RT.model_fn(str(tmp_path))
    monkeypatch.setenv("SPACY_MODEL", str(pipeline_dir / "model-last"))
    assert RT.model_fn(str(tmp_path)).pipe_names == ["entity_ruler"]
    monkeypatch.setenv("SPACY_MODEL", "no_such_spacy_package_xyz")
    with pytest.raises(ModelLoadError, match="Failed to load spaCy pipeline no_such_spacy_package_xyz"):
        RT.model_fn(str(tmp_path))


def test_missing_factory_hint(tmp_path: Path) -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.to_disk(tmp_path / "p")
    cfg = (tmp_path / "p" / "config.cfg").read_text().replace('factory = "sentencizer"', 'factory = "transformer"')
    (tmp_path / "p" / "config.cfg").write_text(cfg)
    with pytest.raises(ModelLoadError, match="code/requirements.txt"):
        RT.model_fn(str(tmp_path))


def test_user_code_with_the_spacy_runtime(pipeline_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default spaCy model_fn/input_fn with a user predict_fn/output_fn (user code works with any runtime)."""
    monkeypatch.delenv("SAGEMAKER_PROGRAM", raising=False)
    monkeypatch.delenv("SAGEMAKER_SUBMIT_DIRECTORY", raising=False)
    monkeypatch.delenv("SPACY_MODEL", raising=False)
    model_dir = tmp_path / "m"
    _pipeline().to_disk(model_dir)
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(
        "import json\n"
        "def predict_fn(data, nlp):\n"
        "    return [sorted({e.label_ for e in d.ents}) for d in nlp.pipe(data.texts)]\n"
        "def output_fn(prediction, accept):\n"
        "    return json.dumps({'labels': prediction}), accept\n"
    )
    handler = Handler(model_dir, "spacy")
    body, ct, _ = handler.invoke(json.dumps({"text": [TEXT, "Berlin"]}).encode(), "application/json")
    assert ct == "application/json"
    assert json.loads(body) == {"labels": [["GPE", "ORG", "PERSON"], ["GPE"]]}
