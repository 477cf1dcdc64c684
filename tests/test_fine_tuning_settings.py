"""How a fine-tuning task's engine settings are built: engine defaults, then the worker's memory
bound (CLICKTUNE_TRAIN_MINI_BATCH_SIZE), then the task's own options."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dao.task_documents import FineTuningOptions
from finetuning.params import FineTuningSettings
from worker.jobs.fine_tuning.training import build_settings
from worker.settings import Settings


def test_worker_mini_batch_size_applies_unless_the_task_sets_one():
    assert build_settings(FineTuningOptions()).mini_batch_size == FineTuningSettings().mini_batch_size == 32
    assert build_settings(FineTuningOptions(), 16).mini_batch_size == 16
    assert build_settings(FineTuningOptions(settings={"mini_batch_size": 8}), 16).mini_batch_size == 8


def test_worker_setting_comes_from_the_environment(monkeypatch):
    assert Settings().train_mini_batch_size is None
    monkeypatch.setenv("CLICKTUNE_TRAIN_MINI_BATCH_SIZE", "16")
    assert Settings().train_mini_batch_size == 16
    monkeypatch.setenv("CLICKTUNE_TRAIN_MINI_BATCH_SIZE", "0")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("avx512_bf16, amx, expected", [
    (False, False, "32-true"), (True, False, "bf16-mixed"), (False, True, "bf16-mixed"),
])
def test_precision_auto_follows_the_cpus_bfloat16_support(monkeypatch, avx512_bf16, amx, expected):
    # The CPU's instruction set cannot be changed from a test: torch's two probes are replaced.
    import torch

    from finetuning.train import training_precision

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert training_precision("auto", torch.device("cpu")) == expected
    assert training_precision("32-true", torch.device("cpu")) == "32-true"
    assert training_precision("bf16-mixed", torch.device("cpu")) == "bf16-mixed"
