"""Iteration / registry names and start references."""

from __future__ import annotations

import pytest

from finetuning.experiments.mlflow_manager import mlflow_metric_name
from finetuning.model_ref import TASK_REF_KINDS, ModelRef
from finetuning.experiments.naming import (
    iteration_experiment_name,
    registered_model_name,
    safe_token,
)

RUN = "0123456789abcdef0123456789abcdef"


def test_parse_start_refs():
    assert ModelRef.parse(f"run:{RUN}", TASK_REF_KINDS) == ModelRef.parse(RUN, TASK_REF_KINDS) == ModelRef("run", RUN)
    assert ModelRef.parse("base:all-MiniLM-L6-v2", TASK_REF_KINDS) == ModelRef("base", "all-MiniLM-L6-v2")
    assert ModelRef.parse("models:/line@blue", TASK_REF_KINDS) == ModelRef("registered", "models:/line@blue")
    for bad in ["", "run:xyz", "base:", "s3://bucket/model", RUN[:-1]]:
        with pytest.raises(ValueError):
            ModelRef.parse(bad, TASK_REF_KINDS)
    assert str(ModelRef.parse(RUN, TASK_REF_KINDS)) == f"run:{RUN}"


def test_experiment_names_are_distinct_and_safe():
    a = iteration_experiment_name("shop search", ModelRef("run", RUN), "batch/1")
    b = iteration_experiment_name("shop search", ModelRef("run", RUN), "batch-1")
    c = iteration_experiment_name("shop search", ModelRef("run", RUN), "batch-10")
    assert len({a, b, c}) == 3
    assert b == f"clicktune/shop-search-{safe_token('shop search')[-8:]}/iter/{RUN}/batch-1"
    assert iteration_experiment_name("l", ModelRef("base", "all-MiniLM-L6-v2"), "b") == "clicktune/l/iter/base-all-MiniLM-L6-v2/b"
    assert len(iteration_experiment_name("x" * 500, ModelRef("run", RUN), "y" * 500)) < 250


def test_registered_model_name_is_registry_safe():
    for line in ["products", "shop/search:v2", "a b"]:
        name = registered_model_name(line)
        assert "/" not in name and ":" not in name and name
    assert registered_model_name("products") == "products"
    assert registered_model_name("a/b") != registered_model_name("a:b")


def test_metric_names_fit_mlflow():
    assert mlflow_metric_name("val_ndcg@10") == "val_ndcg_at_10"
    assert mlflow_metric_name("val_loss") == "val_loss"
