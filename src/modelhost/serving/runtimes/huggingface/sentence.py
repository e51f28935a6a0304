"""sentence-transformers tasks (as Hugging Face's inference toolkit serves them; the SageMaker DLC's transformers
has no such tasks): ``sentence-embeddings``, ``sentence-similarity``, ``sentence-ranking``.

* sentence-embeddings: ``"text"`` or ``["t1", ...]`` -> ``{"embeddings": [...]}``;
* sentence-similarity: ``{"source_sentence": s, "sentences": [...]}`` -> ``{"similarities": [cosines]}``;
* sentence-ranking (a cross-encoder): ``[[query, text], ...]`` -> ``{"scores": [...]}``.

Parameters go to ``encode`` / ``predict`` (e.g. ``normalize_embeddings``). Their progress bar is off unless
a request's parameters ask for it: sentence-transformers draws one on stderr per call whenever its logger
is at INFO (the instance's level), which put two lines per request into the endpoint's log and cost the
server ~1 ms per request to read and write them.
"""

from __future__ import annotations

from typing import Any

SENTENCE_TASKS = ("sentence-similarity", "sentence-embeddings", "sentence-ranking")


def _quiet(parameters: dict[str, Any]) -> dict[str, Any]:
    """The request's parameters, with no progress bar unless they ask for one."""
    return parameters if "show_progress_bar" in parameters else {"show_progress_bar": False, **parameters}


class SentenceEmbeddingPipeline:
    task = "sentence-embeddings"

    def __init__(self, model_dir: str, device: str, trust_remote_code: bool = False) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(model_dir, device=device, trust_remote_code=trust_remote_code)
        self.tokenizer = self.model.tokenizer

    def __call__(self, inputs: Any, **parameters: Any) -> dict[str, Any]:
        if not isinstance(inputs, str | list):
            raise ValueError("sentence-embeddings inputs must be a string or a list of strings")
        return {"embeddings": self.model.encode(inputs, **_quiet(parameters)).tolist()}


class SentenceSimilarityPipeline(SentenceEmbeddingPipeline):
    task = "sentence-similarity"

    def __call__(self, inputs: Any, **parameters: Any) -> dict[str, Any]:
        from sentence_transformers import util

        if not isinstance(inputs, dict) or "source_sentence" not in inputs or "sentences" not in inputs:
            raise ValueError('sentence-similarity inputs must be {"source_sentence": "...", "sentences": [...]}')
        parameters = _quiet(parameters)
        source = self.model.encode(inputs["source_sentence"], convert_to_tensor=True, **parameters)
        others = self.model.encode(inputs["sentences"], convert_to_tensor=True, **parameters)
        return {"similarities": util.cos_sim(source, others).tolist()[0]}


class SentenceRankingPipeline:
    task = "sentence-ranking"

    def __init__(self, model_dir: str, device: str, trust_remote_code: bool = False) -> None:
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(model_dir, device=device, trust_remote_code=trust_remote_code)
        self.tokenizer = self.model.tokenizer

    def __call__(self, inputs: Any, **parameters: Any) -> dict[str, Any]:
        if not isinstance(inputs, list) or not inputs:
            raise ValueError("sentence-ranking inputs must be a list of [query, text] pairs")
        pairs = [inputs] if isinstance(inputs[0], str) else inputs
        return {"scores": self.model.predict(pairs, **_quiet(parameters)).tolist()}


PIPELINES: dict[str, Any] = {
    "sentence-embeddings": SentenceEmbeddingPipeline,
    "sentence-similarity": SentenceSimilarityPipeline,
    "sentence-ranking": SentenceRankingPipeline,
}


def load_sentence_pipeline(task: str, model_dir: str, device: str, trust_remote_code: bool) -> Any:
    return PIPELINES[task](model_dir, device=device, trust_remote_code=trust_remote_code)
