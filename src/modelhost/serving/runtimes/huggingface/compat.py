"""Pipelines the HF DLCs have (transformers 4.x) that transformers 5 removed: question-answering, summarization,
translation(_xx_to_yy), text2text-generation and conversational.

Request and response shapes follow the transformers 4.x pipelines the SageMaker toolkit called:

* question-answering: ``{"question": q, "context": c}`` (or a list of them) -> ``{"score", "start", "end",
  "answer"}`` (a list of ``top_k`` of them when ``top_k > 1``; one per question for a list);
* text2text-generation / summarization / translation: ``str`` or a list of ``str`` -> ``[{"generated_text" |
  "summary_text" | "translation_text": ...}]``; generation parameters (``max_new_tokens``, ``num_beams``, ...)
  go to ``model.generate``; a T5-style ``prefix`` from ``config.task_specific_params`` is prepended.
* conversational: the toolkit's ``{"text": ..., "past_user_inputs": [...], "generated_responses": [...]}`` ->
  ``{"generated_text": reply, "conversation": {"past_user_inputs": [...], "generated_responses": [...]}}``
  (transformers 4.x ``Conversation`` semantics); a list of chat messages ``[{"role", "content"}]`` is accepted
  too and answered the same way plus ``"messages"`` (the list with the assistant's reply appended). The prompt
  is the tokenizer's chat template when it has one, else the turns joined by the EOS token (as 4.x did).

They are plain callables with ``model``, ``tokenizer``, ``task`` and ``device`` attributes, like a pipeline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

COMPAT_TASKS = ("question-answering", "summarization", "translation", "text2text-generation", "conversational")


def is_compat_task(task: str) -> bool:
    return task in COMPAT_TASKS or (task.startswith("translation_") and "_to_" in task)


class QuestionAnsweringPipeline:
    """Extractive QA over an ``AutoModelForQuestionAnswering`` (start/end logits) with a fast tokenizer."""

    task = "question-answering"

    def __init__(self, model: Any, tokenizer: Any, device: torch.device) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = device
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("question-answering needs a fast tokenizer (tokenizer.json) for answer offsets")

    def __call__(self, inputs: Any = None, **kwargs: Any) -> Any:
        if inputs is None:
            inputs = {"question": kwargs.pop("question", None), "context": kwargs.pop("context", None)}
        if isinstance(inputs, dict):
            return self._one(inputs, **kwargs)
        if isinstance(inputs, list | tuple):
            return [self._one(item, **kwargs) for item in inputs]
        raise ValueError('question-answering inputs must be {"question": ..., "context": ...} or a list of them')

    def _one(
        self,
        item: Any,
        top_k: int = 1,
        doc_stride: int = 128,
        max_answer_len: int = 15,
        max_seq_len: int | None = None,
        max_question_len: int = 64,
        handle_impossible_answer: bool = False,
        **unused: Any,
    ) -> Any:
        if not isinstance(item, dict) or not item.get("question") or not item.get("context"):
            raise ValueError('question-answering needs "question" and "context" strings')
        question, context = str(item["question"]), str(item["context"])
        limit = getattr(self.tokenizer, "model_max_length", 512) or 512
        max_len = min(max_seq_len or 384, limit if limit < 100_000 else 512)
        stride = min(doc_stride, max_len // 2)
        enc = self.tokenizer(
            question[: max_question_len * 16],
            context,
            truncation="only_second",
            max_length=max_len,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="longest",
            return_tensors="pt",
        )
        offsets = enc.pop("offset_mapping").tolist()
        enc.pop("overflow_to_sample_mapping", None)
        names = ("input_ids", "attention_mask", "token_type_ids")
        features = {k: v.to(self.device) for k, v in enc.items() if k in names}
        with torch.inference_mode():
            out = self.model(**features)
        starts = out.start_logits.float().cpu().numpy()
        ends = out.end_logits.float().cpu().numpy()
        candidates: list[tuple[float, int, int]] = []
        null_score = 0.0
        for chunk in range(starts.shape[0]):
            seq_ids = enc.sequence_ids(chunk)
            in_context = np.array([s == 1 for s in seq_ids])
            start_p = _softmax(np.where(in_context, starts[chunk], -1e4))
            end_p = _softmax(np.where(in_context, ends[chunk], -1e4))
            null_score = max(null_score, float(_softmax(starts[chunk])[0] * _softmax(ends[chunk])[0]))
            scores = np.triu(np.outer(start_p, end_p))
            scores = np.tril(scores, max_answer_len - 1)
            scores[~in_context, :] = 0
            scores[:, ~in_context] = 0
            flat = np.argsort(-scores, axis=None)[: max(top_k, 1)]
            for idx in flat:
                s, e = np.unravel_index(idx, scores.shape)
                if scores[s, e] <= 0:
                    continue
                char_start, char_end = offsets[chunk][s][0], offsets[chunk][e][1]
                candidates.append((float(scores[s, e]), char_start, char_end))
        if handle_impossible_answer:
            candidates.append((null_score, 0, 0))
        candidates.sort(key=lambda c: -c[0])
        seen: set[tuple[int, int]] = set()
        unique: list[dict[str, Any]] = []
        for score, start, end in candidates:
            if (start, end) not in seen:
                seen.add((start, end))
                unique.append({"score": score, "start": start, "end": end, "answer": context[start:end]})
        unique = unique[: max(top_k, 1)]
        if not unique:
            unique = [{"score": 0.0, "start": 0, "end": 0, "answer": ""}]
        return unique[0] if top_k == 1 else unique


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


class Text2TextGenerationPipeline:
    """Encoder-decoder generation (``AutoModelForSeq2SeqLM``): text2text-generation, summarization, translation."""

    return_name = "generated"

    def __init__(self, model: Any, tokenizer: Any, device: torch.device, task: str = "text2text-generation") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = device
        self.task = task
        params = getattr(model.config, "task_specific_params", None) or {}
        specific = dict(params.get(task) or params.get(task.split("_", 1)[0]) or {})
        self.prefix: str = specific.pop("prefix", None) or getattr(model.config, "prefix", None) or ""
        # transformers 4.x applied these (num_beams, max_length, ...) to the model config for the task
        self.generate_defaults: dict[str, Any] = specific

    def __call__(self, inputs: Any = None, **kwargs: Any) -> Any:
        if inputs is None:
            inputs = kwargs.pop("text_inputs", None)
        single = isinstance(inputs, str)
        texts = [inputs] if single else inputs
        if not isinstance(texts, list | tuple) or not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"{self.task} inputs must be a string or a list of strings")
        kwargs.pop("return_text", None)
        clean = kwargs.pop("clean_up_tokenization_spaces", None)
        truncation = kwargs.pop("truncation", True)
        kwargs.pop("src_lang", None), kwargs.pop("tgt_lang", None)
        generate_kwargs = {**self.generate_defaults, **kwargs}
        enc = self.tokenizer([self.prefix + t for t in texts], padding=True, truncation=truncation, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            out = self.model.generate(**enc, **generate_kwargs)
        decoded = self.tokenizer.batch_decode(out, skip_special_tokens=True, clean_up_tokenization_spaces=bool(clean))
        per_input = len(decoded) // len(texts)
        key = f"{self.return_name}_text"
        results = [[{key: t} for t in decoded[i * per_input : (i + 1) * per_input]] for i in range(len(texts))]
        if single:
            return results[0]
        if all(len(r) == 1 for r in results):  # as transformers 4.x: one result per input -> flat list
            return [r[0] for r in results]
        return results


class SummarizationPipeline(Text2TextGenerationPipeline):
    return_name = "summary"


class TranslationPipeline(Text2TextGenerationPipeline):
    return_name = "translation"


class ConversationalPipeline:
    """A chat turn with a decoder-only (``AutoModelForCausalLM``) or encoder-decoder model."""

    task = "conversational"

    def __init__(self, model: Any, tokenizer: Any, device: torch.device) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = device
        self.seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))

    @staticmethod
    def _messages(inputs: Any) -> tuple[list[dict[str, str]], bool]:
        """(chat messages, whether the request was a message list)."""
        if isinstance(inputs, str):
            return [{"role": "user", "content": inputs}], False
        if isinstance(inputs, dict) and isinstance(inputs.get("text"), str):
            users = list(inputs.get("past_user_inputs") or [])
            replies = list(inputs.get("generated_responses") or [])
            if len(replies) > len(users) or not all(isinstance(t, str) for t in users + replies):
                raise ValueError(
                    "past_user_inputs and generated_responses must be lists of strings, one reply per input"
                )
            messages: list[dict[str, str]] = []
            for i, text in enumerate(users):
                messages.append({"role": "user", "content": text})
                if i < len(replies):
                    messages.append({"role": "assistant", "content": replies[i]})
            return [*messages, {"role": "user", "content": inputs["text"]}], False
        if (
            isinstance(inputs, list)
            and inputs
            and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in inputs)
        ):
            return [{"role": str(m.get("role", "user")), "content": m["content"]} for m in inputs], True
        raise ValueError(
            'conversational inputs must be {"text": ..., "past_user_inputs": [...], "generated_responses": [...]}, '
            'a string, or a list of {"role", "content"} messages'
        )

    def _prompt_ids(self, messages: list[dict[str, str]]) -> Any:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
            return ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
        eos = tok.eos_token or ""
        text = "".join(m["content"] + eos for m in messages)
        return tok(text, return_tensors="pt")["input_ids"]

    def __call__(self, inputs: Any = None, **kwargs: Any) -> Any:
        if inputs is None:
            inputs = kwargs.pop("conversations", None)
        messages, as_messages = self._messages(inputs)
        ids = self._prompt_ids(messages).to(self.device)
        generate_kwargs = {"max_new_tokens": 32, **kwargs}
        if self.tokenizer.pad_token_id is None and self.tokenizer.eos_token_id is not None:
            generate_kwargs.setdefault("pad_token_id", self.tokenizer.eos_token_id)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **generate_kwargs)
        new = out[0] if self.seq2seq else out[0, ids.shape[1] :]
        reply = self.tokenizer.decode(new, skip_special_tokens=True)
        users = [m["content"] for m in messages if m["role"] == "user"]
        replies = [m["content"] for m in messages if m["role"] == "assistant"] + [reply]
        result: dict[str, Any] = {
            "generated_text": reply,
            "conversation": {"past_user_inputs": users, "generated_responses": replies},
        }
        if as_messages:
            result["messages"] = [*messages, {"role": "assistant", "content": reply}]
        return result


def load_compat_pipeline(task: str, model_dir: str, device: torch.device, trust_remote_code: bool) -> Any:
    from transformers import AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if task == "conversational":
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        auto: Any = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        chat = auto.from_pretrained(model_dir, trust_remote_code=trust_remote_code, dtype=torch.float32).to(device)
        return ConversationalPipeline(chat, tokenizer, device)
    if task == "question-answering":
        model = AutoModelForQuestionAnswering.from_pretrained(
            model_dir, trust_remote_code=trust_remote_code, dtype=torch.float32
        ).to(device)
        return QuestionAnsweringPipeline(model, tokenizer, device)
    model = AutoModelForSeq2SeqLM.from_pretrained(
        model_dir, trust_remote_code=trust_remote_code, dtype=torch.float32
    ).to(device)
    cls = (
        SummarizationPipeline
        if task == "summarization"
        else TranslationPipeline
        if task.startswith("translation")
        else Text2TextGenerationPipeline
    )
    return cls(model, tokenizer, device, task)
