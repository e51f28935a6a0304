"""The Python that loads a model outside modelhost, per framework (the book's "load the model
directly" step). Each snippet binds ``model``; paths are the extracted artifact's."""

from __future__ import annotations

import json
from pathlib import Path


def _xgboost(path: Path) -> str:
    with path.open("rb") as f:
        pickled = f.read(1) == b"\x80"  # pickle protocol 2+ (the built-in algorithm's file)
    if pickled:
        return f"import pickle\n\nwith open({str(path)!r}, 'rb') as f:\n    model = pickle.load(f)  # xgboost.Booster\n"
    return f"import xgboost as xgb\n\nmodel = xgb.Booster()\nmodel.load_model({str(path)!r})\n"


def _huggingface(d: Path) -> str:
    if (d / "modules.json").is_file():
        return (
            "from sentence_transformers import SentenceTransformer\n\n"
            f"model = SentenceTransformer({str(d)!r}, device='cpu')\n"
            "print(model.encode(['modelhost exports models']).shape)\n"
        )
    try:
        architectures = json.loads((d / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        architectures = []
    # The class the model was saved from (config.json "architectures"), as the book loads
    # DistilBertForSequenceClassification; AutoModel would drop the task head.
    model_class = f"transformers.{architectures[0]}" if architectures else "transformers.AutoModel"
    tokenizer = any((d / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))
    return (
        "import transformers\n\n"
        f"config = transformers.AutoConfig.from_pretrained({str(d)!r})\n"
        f"model = {model_class}.from_pretrained({str(d)!r}, config=config)\n"
        + (f"tokenizer = transformers.AutoTokenizer.from_pretrained({str(d)!r})\n" if tokenizer else "")
    )


def _pytorch(path: Path) -> str:
    if path.suffix == ".pt2":
        return f"import torch\n\nmodel = torch.export.load({str(path)!r}).module()\n"
    return (
        "import torch\n\n"
        "try:\n"
        f"    model = torch.jit.load({str(path)!r}, map_location='cpu')  # TorchScript\n"
        "except RuntimeError:  # a pickled nn.Module\n"
        f"    model = torch.load({str(path)!r}, map_location='cpu', weights_only=False)\n"
        "model.eval()\n"
    )


def _user_code(d: Path, script: Path, handlers: tuple[str, ...]) -> str:
    load = (
        f"model = inference.model_fn({str(d)!r})\n"
        if "model_fn" in handlers
        else "model = None  # the script defines no model_fn\n"
    )
    return (
        "import importlib.util\n\n"
        f"spec = importlib.util.spec_from_file_location('inference', {str(script)!r})\n"
        "inference = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(inference)\n" + load
    )


def snippet(
    runtime: str | None, d: Path, model_file: str | None, script: Path | None, handlers: tuple[str, ...]
) -> str:
    target = (d / model_file) if model_file and model_file != "." else d
    if script is not None and "model_fn" in handlers:
        return _user_code(d, script, handlers)  # the container calls the user's model_fn instead of its own
    if runtime == "sklearn":
        return f"import joblib\n\nmodel = joblib.load({str(target)!r})\nprint(type(model))\n"
    if runtime == "xgboost":
        return _xgboost(target)
    if runtime == "huggingface":
        return _huggingface(d)
    if runtime == "onnx":
        return (
            "import onnxruntime as ort\n\n"
            f"model = ort.InferenceSession({str(target)!r}, providers=['CPUExecutionProvider'])\n"
            "print([i.name for i in model.get_inputs()])\n"
        )
    if runtime == "pytorch":
        return _pytorch(target)
    if runtime == "spacy":
        return f"import spacy\n\nmodel = spacy.load({str(d)!r})\nprint(model.pipe_names)\n"
    if runtime == "tensorflow":
        return f"import tensorflow as tf\n\nmodel = tf.saved_model.load({str(target)!r})\n"
    if script is not None:
        return _user_code(d, script, handlers)
    return "# no known model files: nothing to load\nmodel = None\n"
