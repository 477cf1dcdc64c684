"""The demo's closing table (worker/demo_summary.py) against the real Mongo wire server."""

from __future__ import annotations

from rich.console import Console

from worker.demo_summary import print_summary


def _printed(mongo_db, result: dict, candidate: dict | None = None) -> str:
    console = Console(record=True, width=200)
    print_summary(console, mongo_db, result, {"ndcg@10": 0.79}, {"ndcg@10": 0.79}, candidate)
    return console.export_text()


def test_summary_says_which_held_out_figure_chose_the_weights(mongo_db):
    result = {"metrics_before": {"val_rand_ndcg@10": 0.70}, "metrics_after": {"val_rand_ndcg@10": 0.72},
              "quality_metric": "val_rand_ndcg@10", "registered_model_name": "line", "registered_model_version": "3"}
    text = _printed(mongo_db, result, candidate={"ndcg@10": 0.80})
    assert "held-out sessions · val_rand_ndcg@10" in text and "+0.0200" in text
    assert "weights chosen by held-out val_rand_ndcg@10 (exploration sessions" in text
    assert "of the candidate the gate kept out" in text and "+0.0100" in text
    assert "registered model: line v3" in text


def test_summary_without_exploration_names_the_main_metric_only(mongo_db):
    text = _printed(mongo_db, {"metrics_before": {"val_ndcg@10": 0.7}, "metrics_after": {"val_ndcg@10": 0.7},
                               "quality_metric": "val_ndcg@10"})
    assert "weights chosen by held-out val_ndcg@10" in text and "exploration" not in text
    assert "kept out" not in text
