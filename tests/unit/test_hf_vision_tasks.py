"""Seed 004's vision tasks the other tests do not cover, on transformers 5 with tiny random models:
object-detection (YOLOS), image-segmentation (SegFormer), zero-shot-image-classification (CLIP)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelhost.serving.errors import ModelServerError
from modelhost.serving.handler import Handler
from tests import hf_models

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow
LABELS: dict[str, Any] = {"id2label": {0: "cat", 1: "dog"}, "label2id": {"cat": 0, "dog": 1}}


def yolos(d: Path) -> Path:
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    cfg = YolosConfig(
        image_size=[32, 32], patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, num_detection_tokens=5, **LABELS,
    )  # fmt: skip
    YolosForObjectDetection(cfg).save_pretrained(d)
    YolosImageProcessor(size={"shortest_edge": 32, "longest_edge": 32}).save_pretrained(d)
    return d


def segformer(d: Path) -> Path:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    cfg = SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], num_attention_heads=[1, 1],
        decoder_hidden_size=16, **LABELS,
    )  # fmt: skip
    SegformerForSemanticSegmentation(cfg).save_pretrained(d)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(d)
    return d


def clip(d: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    d.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for word in ("a", "photo", "of", "cat", "dog"):
        vocab[word + "</w>"] = len(vocab)
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    layers = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2)
    text = dict(vocab_size=len(vocab), max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    cfg = CLIPConfig(
        text_config={**layers, **text}, vision_config={**layers, "image_size": 32, "patch_size": 8}, projection_dim=16
    )
    CLIPModel(cfg).save_pretrained(d)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(
        image_processor=images, tokenizer=CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    ).save_pretrained(d)
    return d


def _handler(tmp_path: Path, build: Callable[[Path], Path], task: str, monkeypatch: pytest.MonkeyPatch) -> Handler:
    import torch

    torch.manual_seed(0)
    monkeypatch.setenv("HF_TASK", task)
    return Handler(build(tmp_path / task), "huggingface")


def _json(handler: Handler, body: bytes, content_type: str) -> Any:
    out, out_type, _ = handler.invoke(body, content_type, "application/json")
    assert out_type == "application/json"
    return json.loads(out)


def test_object_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = _handler(tmp_path, yolos, "object-detection", monkeypatch)
    assert _json(handler, hf_models.png_bytes(), "image/png") == []  # random weights: nothing over 0.5
    image = base64.b64encode(hf_models.png_bytes()).decode()
    request = {"inputs": image, "parameters": {"threshold": 0.0}}
    found = _json(handler, json.dumps(request).encode(), "application/json")
    assert found and set(found[0]) == {"score", "label", "box"}
    assert set(found[0]["box"]) == {"xmin", "ymin", "xmax", "ymax"} and found[0]["label"] in ("cat", "dog")


def test_image_segmentation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = _handler(tmp_path, segformer, "image-segmentation", monkeypatch)
    segments = _json(handler, hf_models.png_bytes(), "image/png")
    assert segments and {s["label"] for s in segments} <= {"cat", "dog"}
    mask = base64.b64decode(segments[0]["mask"])  # the mask as a base64 PNG, as the toolkit encodes images
    assert mask.startswith(b"\x89PNG")


def test_zero_shot_image_classification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = _handler(tmp_path, clip, "zero-shot-image-classification", monkeypatch)
    image = base64.b64encode(hf_models.png_bytes()).decode()
    request = {"inputs": image, "parameters": {"candidate_labels": ["cat", "dog"]}}
    scores = _json(handler, json.dumps(request).encode(), "application/json")
    assert sorted(s["label"] for s in scores) == ["cat", "dog"]
    assert sum(s["score"] for s in scores) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ModelServerError) as info:  # no candidate labels: the toolkit's 400
        handler.invoke(hf_models.png_bytes(), "image/png", "application/json")
    assert info.value.status == 400 and "candidate_labels" in info.value.message
