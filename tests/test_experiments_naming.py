"""Iteration / registry names and start references."""

from __future__ import annotations

import pytest

from finetuning.experiments.mlflow_manager import mlflow_metric_name
from finetuning.experiments.naming import (
    StartRef,
    iteration_experiment_name,
    parse_start_ref,
    registered_model_name,
    safe_token,
)

RUN = "0123456789abcdef0123456789abcdef"


def test_parse_start_refs():
    assert parse_start_ref(f"run:{RUN}") == parse_start_ref(RUN) == StartRef("run", RUN)
    assert parse_start_ref("base:all-MiniLM-L6-v2") == StartRef("base", "all-MiniLM-L6-v2")
    assert parse_start_ref("models:/line@blue") == StartRef("registered", "models:/line@blue")
    for bad in ["", "run:xyz", "base:", "s3://bucket/model", RUN[:-1]]:
        with pytest.raises(ValueError):
            parse_start_ref(bad)
    assert str(parse_start_ref(RUN)) == f"run:{RUN}"


def test_experiment_names_are_distinct_and_safe():
    a = iteration_experiment_name("shop search", StartRef("run", RUN), "batch/1")
    b = iteration_experiment_name("shop search", StartRef("run", RUN), "batch-1")
    c = iteration_experiment_name("shop search", StartRef("run", RUN), "batch-10")
    assert len({a, b, c}) == 3
    assert b == f"clicktune/shop-search-{safe_token('shop search')[-8:]}/iter/{RUN}/batch-1"
    assert iteration_experiment_name("l", StartRef("base", "all-MiniLM-L6-v2"), "b") == "clicktune/l/iter/base-all-MiniLM-L6-v2/b"
    assert len(iteration_experiment_name("x" * 500, StartRef("run", RUN), "y" * 500)) < 250


def test_registered_model_name_is_registry_safe():
    for line in ["products", "shop/search:v2", "a b"]:
        name = registered_model_name(line)
        assert "/" not in name and ":" not in name and name
    assert registered_model_name("products") == "products"
    assert registered_model_name("a/b") != registered_model_name("a:b")


def test_metric_names_fit_mlflow():
    assert mlflow_metric_name("val_ndcg@10") == "val_ndcg_at_10"
    assert mlflow_metric_name("val_loss") == "val_loss"
