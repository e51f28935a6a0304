"""What a model artifact holds: its files, the runtime modelhost would use and why, the Python that
loads it outside modelhost, and the handler functions its ``code/inference.py`` defines."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from modelhost.export.snippets import snippet
from modelhost.serving.images import detect_runtime, runtime_for_image

HANDLERS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")
SKLEARN_FILES = ("model.joblib", "model.pkl", "model.pickle")


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the model directory, "/"-separated
    size: int


@dataclass(frozen=True)
class Inspection:
    files: tuple[FileEntry, ...]
    runtime: str | None  # a serving runtime name, None when nothing known is there
    reason: str  # which file (or image) decided the runtime
    model_file: str | None  # the file (or directory, ".") the snippet loads
    snippet: str  # Python that loads the model outside modelhost
    handlers: tuple[str, ...]  # functions of code/inference.py among HANDLERS
    inference_script: str | None  # code/inference.py (or SAGEMAKER_PROGRAM) when present

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def list_files(model_dir: Path) -> tuple[FileEntry, ...]:
    out = []
    for p in sorted(model_dir.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            out.append(FileEntry(p.relative_to(model_dir).as_posix(), p.stat().st_size))
    return tuple(out)


def _first(model_dir: Path, suffixes: tuple[str, ...]) -> Path | None:
    return next((p for p in sorted(model_dir.iterdir()) if p.is_file() and p.suffix in suffixes), None)


def decide(model_dir: Path, image: str = "") -> tuple[str | None, str, str | None]:
    """(runtime, why, the file that shows it) from the image when it names a framework, else the files."""
    runtime = runtime_for_image(image) if image else None
    files_runtime, why, model_file = _from_files(model_dir)
    if runtime is not None and runtime != "python":
        return runtime, f"the model's image {image} is the {runtime} container", model_file
    return files_runtime, why, model_file


def _from_files(d: Path) -> tuple[str | None, str, str | None]:
    # The same order as serving.images.detect_runtime, which the server uses; this adds the reason.
    runtime = detect_runtime(d)
    if runtime == "sklearn":
        name = next(n for n in SKLEARN_FILES if (d / n).is_file())
        return runtime, f"{name} is a joblib/pickle file (scikit-learn)", name
    if runtime == "xgboost":
        f = d / "xgboost-model" if (d / "xgboost-model").is_file() else _first(d, (".ubj", ".bst"))
        assert f is not None
        return runtime, f"{f.name} is an XGBoost model (the XGBoost container's file name)", f.name
    if runtime == "huggingface":
        kind = "sentence-transformers model" if (d / "modules.json").is_file() else "transformers model"
        return runtime, f"config.json with weights: a Hugging Face {kind}", "."
    if runtime == "onnx":
        f = _first(d, (".onnx",))
        assert f is not None
        return runtime, f"{f.name} is an ONNX graph", f.name
    if runtime == "pytorch":
        f = _first(d, (".pt", ".pth", ".pt2"))
        assert f is not None
        kind = "torch.export program" if f.suffix == ".pt2" else "TorchScript (or pickled) module"
        return runtime, f"{f.name} is a PyTorch {kind}", f.name
    if runtime == "spacy":
        return runtime, "config.cfg and meta.json: a spaCy pipeline directory", "."
    if runtime == "tensorflow":
        return runtime, "saved_model.pb: a TensorFlow SavedModel", "."
    nested = sorted(d.glob("*/saved_model.pb"))
    if nested:  # TensorFlow Serving's layout: <version>/saved_model.pb
        version = nested[-1].parent.name
        return "tensorflow", f"{version}/saved_model.pb: a TensorFlow Serving model (version {version})", version
    if runtime == "python":
        return runtime, "only code/inference.py: its model_fn loads the model", None
    return None, "no file a known framework writes (model.joblib, xgboost-model, saved_model.pb, ...)", None


def inference_script(model_dir: Path, environment: dict[str, str] | None = None) -> Path | None:
    program = (environment or {}).get("SAGEMAKER_PROGRAM", "inference.py")
    for candidate in (model_dir / "code" / program, model_dir / program):
        if candidate.is_file():
            return candidate
    return None


def handler_functions(script: Path) -> tuple[str, ...]:
    """The handler functions a script defines at module level (parsed, never run)."""
    try:
        tree = ast.parse(script.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return ()
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    return tuple(h for h in HANDLERS if h in defined)


def inspect_model(model_dir: Path, image: str = "", environment: dict[str, str] | None = None) -> Inspection:
    runtime, reason, model_file = decide(model_dir, image)
    script = inference_script(model_dir, environment)
    handlers = handler_functions(script) if script else ()
    code = snippet(runtime, model_dir, model_file, script, handlers)
    return Inspection(
        files=list_files(model_dir),
        runtime=runtime,
        reason=reason,
        model_file=model_file,
        snippet=code,
        handlers=handlers,
        inference_script=script.relative_to(model_dir).as_posix() if script else None,
    )
