"""Fine-tuning a text embedding model on question–answer pairs from a JSONL file.

``run_qa(QATrainingConfig.from_json(path, overrides))`` trains (or only evaluates) and writes
progress files, checkpoints and ``final_model`` under ``output_dir``; see :mod:`finetuning.qa.trainer`.
"""

from finetuning.qa.config import QATrainingConfig
from finetuning.qa.data import InvalidLine, QAPair, QAReadResult, read_qa_jsonl, split_pairs
from finetuning.qa.trainer import QADataError, QARunResult, QAResumeMismatch, evaluate_existing, run_qa, train_qa

__all__ = [
    "InvalidLine", "QAPair", "QAReadResult", "QATrainingConfig", "QADataError", "QARunResult",
    "QAResumeMismatch", "evaluate_existing", "read_qa_jsonl", "run_qa", "split_pairs", "train_qa",
]
