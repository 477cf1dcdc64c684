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
