"""Shared pytest setup. Fixtures live in tests/fixtures/*, one module per real service."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.engine",
    "tests.fixtures.loaders",
    "tests.fixtures.worker",
    "tests.fixtures.reindex",
    "tests.fixtures.fine_tuning",
]
