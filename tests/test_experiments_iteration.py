"""Iterations of a model line against a real ``mlflow server`` (the ``mlflow_server`` fixture).

A tiny random BERT (``build_tiny_text_model``) is really trained for a few optimizer steps per
trial with an in-batch contrastive loss; metrics, params and models go through the manager.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from finetuning.experiments import ExperimentsManager, run_iteration
from finetuning.experiments.mlflow_manager import mlflow_metric_name
from finetuning.model_ref import ModelRef
from finetuning.experiments.naming import iteration_experiment_name, registered_model_name
from finetuning.metrics.retrieval import ndcg_at_k
from finetuning.keeper_verdict import CANDIDATE_KEPT, KeeperVerdict
from finetuning.metrics.paired import PairedDifference
from finetuning.models.registry import load_model
from finetuning.params import FineTuningParams, FineTuningSettings
from finetuning.tracking.tracker import MetricValue

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[1]

TRAIN = [
    ("red apple", "apple banana food"),
    ("blue car", "car house blue"),
    ("cat dog", "dog cat music"),
    ("cancer risk", "cancer disease patients"),
    ("water fire", "fire water news"),
    ("gene protein", "protein gene cell"),
]
VALID = [("apple food", "banana apple"), ("dog", "dog sport"), ("blood treatment", "blood treatment study")]
PROBE = ["what is the risk of cancer", "red car", "a cat and a dog"]
SETTINGS = FineTuningSettings(main_metric="val_margin", max_steps=2, batch_size=6)
SPACE = {
    "query_lr": {"loguniform": [1e-4, 1e-2]},
    "temperature": {"loguniform": [0.05, 0.5]},
    "query_weight_decay": {"choice": [0.0, 0.01]},
}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from finetuning.models.tiny import build_tiny_text_model

    return build_tiny_text_model(tmp_path_factory.mktemp("tiny") / "base", dim=32, layers=2)


class TinyTrainer:
    """``train_fn`` of the tests: start model (base dir or the start run's MLflow model), two
    AdamW steps of in-batch InfoNCE, validation metrics, ``save_model``; remembers what it did."""

    def __init__(self, base_dir: Path, fail_on_trial: int | None = None, quality_metric: str | None = None) -> None:
        self.base_dir = base_dir
        self.fail_on_trial = fail_on_trial
        # a twin figure that chooses instead of the main metric, as fine_tune's exploration judge does:
        # here the negated margin, so that its best run is not the main metric's best
        self.quality_metric = quality_metric
        self.calls = 0
        self.runs: dict[str, dict] = {}

    def __call__(self, params: FineTuningParams, tracker: ExperimentsManager) -> float:
        self.calls += 1
        if self.calls == self.fail_on_trial:
            raise RuntimeError("simulated training crash")
        start = tracker.start_ref
        model = tracker.download_model_by_run_id(start.value) if start.kind == "run" else load_model(self.base_dir)
        torch.manual_seed(0)
        model.train()
        optimizer = torch.optim.AdamW(
            list(model.get_query_model_params()), lr=params.query_lr, weight_decay=params.query_weight_decay
        )
        queries, docs = [q for q, _ in TRAIN], [d for _, d in TRAIN]
        for step in range(SETTINGS.max_steps):
            logits = model.forward_query(queries) @ model.forward_items(docs).T / params.temperature
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(queries)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tracker.save_metric(MetricValue("train_loss", loss.item(), step))
        q = model.encode_queries([q for q, _ in VALID])
        d = model.encode_items([d for _, d in VALID])
        scores = q @ d.T
        margin = float(scores.diagonal().mean() - scores.mean())
        ranked = [[str(i) for i in row.argsort(descending=True).tolist()] for row in scores]
        ndcg = ndcg_at_k(ranked, [{str(i): 1.0} for i in range(len(VALID))], k=10)
        tracker.save_metric(MetricValue("val_ndcg@10", ndcg, SETTINGS.max_steps))
        tracker.save_metric(MetricValue("val_margin", margin, SETTINGS.max_steps))
        quality = margin
        if self.quality_metric:
            tracker.save_quality_metric(self.quality_metric)
            quality = -margin
            tracker.save_metric(MetricValue(self.quality_metric, quality, SETTINGS.max_steps))
        saved = tracker.save_model(model, quality=quality)
        self.runs[tracker.run_id] = {
            "start": str(start),
            "saved": saved,
            "probe": model.encode_queries(PROBE).numpy(),
            "probe_items": model.encode_items(PROBE).numpy(),
        }
        return quality


def _manager(mlflow_server, line: str) -> ExperimentsManager:
    return ExperimentsManager(mlflow_server.url, line, main_metric="val_margin", higher_is_better=True)


@pytest.fixture(scope="module")
def first_iteration(mlflow_server, tiny_base):
    line = f"test-line-{uuid.uuid4().hex[:8]}"
    manager = _manager(mlflow_server, line)
    trainer = TinyTrainer(tiny_base)
    progress: list[tuple[int, int, float | None]] = []
    result = run_iteration(
        manager, trainer, start_ref="base:tiny", batch_id="batch-1", settings=SETTINGS, space=SPACE,
        max_evals=3, seed=7, on_trial=lambda i, n, best: progress.append((i, n, best)),
    )
    return {"line": line, "manager": manager, "trainer": trainer, "result": result, "progress": progress}


def _runs(client: MlflowClient, experiment_id: str):
    return client.search_runs([experiment_id], max_results=100)


def test_runs_are_ranked_by_the_figure_that_chose_their_weights(mlflow_server, tiny_base):
    """When training names another held-out figure as its quality (the exploration judge), that figure
    ranks the trials and is recorded under its own name; the main metric's own best does not decide."""
    line = f"test-line-{uuid.uuid4().hex[:8]}"
    twin = "val_rand_margin"
    result = run_iteration(_manager(mlflow_server, line), TinyTrainer(tiny_base, quality_metric=twin), start_ref="base:tiny",
                           batch_id="batch-1", settings=SETTINGS, space=SPACE, max_evals=3, seed=7)
    client = MlflowClient(mlflow_server.url)
    runs = _runs(client, result.experiment_id)
    assert len(runs) == 3
    for run in runs:
        assert run.data.tags["clicktune.quality_metric"] == twin
        assert run.data.metrics["quality"] == run.data.metrics["best." + twin] == pytest.approx(-run.data.metrics["val_margin"])
        assert "best.val_margin" not in run.data.metrics
    chosen = max(runs, key=lambda r: r.data.metrics["quality"])
    assert chosen.info.run_id != max(runs, key=lambda r: r.data.metrics["val_margin"]).info.run_id
    assert result.best_run_id == chosen.info.run_id and result.quality_metric == twin
    assert result.best_quality == pytest.approx(chosen.data.metrics["quality"])
    version = client.get_model_version(result.registered_name, result.version)
    assert version.run_id == chosen.info.run_id and version.tags["clicktune.quality_metric"] == twin


def test_first_iteration_searches_logs_and_registers(first_iteration, mlflow_server):
    line, result, trainer = first_iteration["line"], first_iteration["result"], first_iteration["trainer"]
    client = MlflowClient(mlflow_server.url)

    assert result.mode == "search" and result.trained == 3 and result.skipped == 0
    experiments = client.search_experiments(filter_string=f"tags.`clicktune.model_line` = '{line}'")
    assert [e.name for e in experiments] == [iteration_experiment_name(line, ModelRef("base", "tiny"), "batch-1")]
    assert experiments[0].experiment_id == result.experiment_id

    runs = _runs(client, result.experiment_id)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        params = FineTuningParams.from_mlflow_params(run.data.params)
        assert run.info.run_name == params.id()
        assert run.data.params["settings.main_metric"] == json.dumps("val_margin")
        assert {"train_loss", "val_margin", "best.val_margin", "quality", mlflow_metric_name("val_ndcg@10")} <= set(run.data.metrics)
        # the trainer named no other figure: the main metric (on the chosen run, recorded with the choice)
        assert run.data.tags.get("clicktune.quality_metric", "val_margin") == "val_margin"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0, 1]
    assert len({r.info.run_name for r in runs}) == 3

    best_run = max(runs, key=lambda r: r.data.metrics["best.val_margin"])
    assert result.best_run_id == best_run.info.run_id
    assert math.isclose(result.best_quality, best_run.data.metrics["best.val_margin"])

    name = registered_model_name(line)
    assert result.registered_name == name and result.quality_metric == "val_margin"
    versions = client.search_model_versions(f"name = '{name}'")
    assert len(versions) == 1
    assert client.get_model_version_by_alias(name, "candidate").version == result.version
    assert versions[0].run_id == best_run.info.run_id

    progress = first_iteration["progress"]
    assert [(i, n) for i, n, _ in progress] == [(1, 3), (2, 3), (3, 3)]
    bests = [b for _, _, b in progress]
    assert bests == sorted(bests) and math.isclose(bests[-1], result.best_quality)
    assert trainer.runs[best_run.info.run_id]["saved"]


def test_rerunning_the_same_iteration_skips_finished_trials(first_iteration, mlflow_server):
    line, first, trainer = first_iteration["line"], first_iteration["result"], first_iteration["trainer"]
    calls_before = trainer.calls
    manager = _manager(mlflow_server, line)
    again = run_iteration(
        manager, trainer, start_ref="base:tiny", batch_id="batch-1", settings=SETTINGS, space=SPACE, max_evals=3, seed=7
    )
    client = MlflowClient(mlflow_server.url)
    assert again.mode == "search"
    assert again.skipped == 3 and again.trained == 0 and trainer.calls == calls_before
    assert len(_runs(client, first.experiment_id)) == 3
    assert (again.best_run_id, again.version) == (first.best_run_id, first.version)
    assert len(client.search_model_versions(f"name = '{registered_model_name(line)}'")) == 1


def test_second_iteration_starts_from_previous_best_params(first_iteration, mlflow_server):
    line, first, trainer = first_iteration["line"], first_iteration["result"], first_iteration["trainer"]
    client = MlflowClient(mlflow_server.url)
    first_runs = sorted(_runs(client, first.experiment_id), key=lambda r: -r.data.metrics["best.val_margin"])
    top2 = [r.info.run_name for r in first_runs[:2]]

    manager = _manager(mlflow_server, line)
    second = run_iteration(
        manager, trainer, start_ref=f"run:{first.best_run_id}", batch_id="batch-2", settings=SETTINGS,
        space=SPACE, max_evals=3, previous_top_n=2,
    )
    assert second.mode == "continue" and second.experiment_id != first.experiment_id
    assert manager.previous_iteration_experiment_id() == first.experiment_id
    runs = _runs(client, second.experiment_id)
    # the runs' params are the start run's (= the previous best) and the previous top-2
    assert sorted(r.info.run_name for r in runs) == sorted(top2)
    assert [t.params_id for t in second.trials] == top2
    best_params = FineTuningParams.from_mlflow_params(client.get_run(first.best_run_id).data.params)
    assert best_params.id() in {FineTuningParams.from_mlflow_params(r.data.params).id() for r in runs}
    # the trials started from the start run's model, downloaded from MLflow
    assert {trainer.runs[r.info.run_id]["start"] for r in runs} == {f"run:{first.best_run_id}"}

    name = registered_model_name(line)
    assert client.get_model_version_by_alias(name, "candidate").version == second.version != first.version
    assert client.get_model_version(name, second.version).run_id == second.best_run_id


def test_model_loads_in_another_process_with_identical_embeddings(first_iteration, mlflow_server, tmp_path):
    line, result, trainer = first_iteration["line"], first_iteration["result"], first_iteration["trainer"]
    manager = first_iteration["manager"]
    name = registered_model_name(line)
    ref = f"models:/{name}/{result.version}"
    script = f"""
import json, sys
import mlflow.pyfunc, pandas as pd
from finetuning.experiments import ExperimentsManager
from finetuning.experiments.model_logging import use_tracking_uri
uri = {mlflow_server.url!r}
manager = ExperimentsManager(uri, {line!r})
model = manager.download_model({ref!r})
by_run = manager.download_model_by_run_id({result.best_run_id!r})
with use_tracking_uri(uri):
    pyfunc = mlflow.pyfunc.load_model({ref!r})
probe = {PROBE!r}
json.dump({{
    "query": model.encode_queries(probe).tolist(),
    "items": model.encode_items(probe).tolist(),
    "by_run": by_run.encode_queries(probe).tolist(),
    "pyfunc_query": pyfunc.predict(pd.DataFrame({{"text": probe}}), params={{"tower": "query"}}).tolist(),
    "pyfunc_items": pyfunc.predict(pd.DataFrame({{"text": probe}}), params={{"tower": "items"}}).tolist(),
}}, open(sys.argv[1], "w"))
"""
    out = tmp_path / "emb.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, "-c", script, str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    trained = trainer.runs[result.best_run_id]
    np.testing.assert_array_equal(np.asarray(got["query"], dtype=np.float32), trained["probe"])
    np.testing.assert_array_equal(np.asarray(got["items"], dtype=np.float32), trained["probe_items"])
    np.testing.assert_array_equal(np.asarray(got["by_run"], dtype=np.float32), trained["probe"])
    np.testing.assert_array_equal(np.asarray(got["pyfunc_query"], dtype=np.float32), trained["probe"])
    np.testing.assert_array_equal(np.asarray(got["pyfunc_items"], dtype=np.float32), trained["probe_items"])
    # and in this process too, through the manager
    local = manager.download_model_by_run_id(result.best_run_id)
    np.testing.assert_array_equal(local.encode_queries(PROBE).numpy(), trained["probe"])


def test_failed_trial_scores_worst_and_the_sweep_goes_on(mlflow_server, tiny_base):
    line = f"test-fail-{uuid.uuid4().hex[:8]}"
    manager = _manager(mlflow_server, line)
    trainer = TinyTrainer(tiny_base, fail_on_trial=2)
    progress: list[tuple[int, int, float | None]] = []
    result = run_iteration(
        manager, trainer, start_ref="base:tiny", batch_id="b", settings=SETTINGS, space=SPACE, max_evals=3,
        seed=3, on_trial=lambda i, n, best: progress.append((i, n, best)),
    )
    assert [t.status for t in result.trials] == ["trained", "failed", "trained"]
    assert "simulated training crash" in result.trials[1].error
    client = MlflowClient(mlflow_server.url)
    statuses = sorted(r.info.status for r in _runs(client, result.experiment_id))
    assert statuses == ["FAILED", "FINISHED", "FINISHED"]
    assert [i for i, _, _ in progress] == [1, 2, 3]
    assert result.best_run_id in {t.run_id for t in result.trials if t.status == "trained"}
    # a failed run is never a finished trial: it will be retried on re-delivery
    failed = next(t for t in result.trials if t.status == "failed")
    failed_run = client.get_run(failed.run_id)
    assert not manager.is_run_finished(FineTuningParams.from_mlflow_params(failed_run.data.params))


def test_save_model_best_only_logs_only_improvements(mlflow_server, tiny_base):
    manager = _manager(mlflow_server, f"test-best-{uuid.uuid4().hex[:8]}")
    manager.start_iteration("base:tiny", "b")
    model = load_model(tiny_base)
    qualities = {}
    for lr, quality in [(1e-4, 0.5), (2e-4, 0.3), (3e-4, 0.7)]:
        params = FineTuningParams(query_lr=lr)
        run_id = manager.start_run(params, SETTINGS)
        manager.save_metric(MetricValue("val_margin", quality - 0.1, 0))
        first_save = manager.save_model(model)
        manager.save_metric(MetricValue("val_margin", quality, 1))
        qualities[run_id] = (first_save, manager.save_model(model), manager.save_model(model))
        verdict = KeeperVerdict(CANDIDATE_KEPT, "val_margin", 1.645, 10, candidate_step=1,
                                proof=PairedDifference(12, 0.1, 0.02))
        manager.save_evaluation({"val_margin": quality - 0.1}, {"val_margin": quality}, keeper=verdict)
        manager.finish_run()
    runs = list(qualities)
    assert qualities[runs[0]] == (True, True, False)     # first run: always best; no re-save without gain
    assert qualities[runs[1]] == (False, False, False)   # 0.3 < 0.5: never logged
    assert qualities[runs[2]] == (True, True, False)     # 0.6 and 0.7 beat 0.5
    assert manager.get_best_quality() == (runs[2], 0.7)
    client = MlflowClient(mlflow_server.url)
    live = client.search_logged_models(experiment_ids=[manager.experiment_id])
    assert sorted(m.source_run_id for m in live) == sorted([runs[0], runs[2]])  # superseded ones deleted
    run_id, model_uri, name, version, choice = manager.finish_iteration()
    assert (run_id, model_uri) == (runs[2], f"models:/{name}/{version}")
    # the choice is recorded where it is made, on the run and the version, and read back from there
    assert choice.run_id == runs[2] and choice.quality == pytest.approx(0.7)
    assert choice.metrics_before == pytest.approx({"val_margin": 0.6})
    assert choice.metrics_after == pytest.approx({"val_margin": 0.7})
    assert choice.keeper == verdict  # which weights the run kept and why, where the gate reads it
    assert manager.model_choice(name, version) == choice
    assert client.get_run(runs[2]).data.tags["clicktune.chosen"] == "true"
    assert client.get_model_version(name, version).tags["clicktune.main_metric"] == "val_margin"


def test_delete_iteration_touches_only_its_own_experiment(mlflow_server):
    line = f"test-del-{uuid.uuid4().hex[:8]}"
    keep = _manager(mlflow_server, line)
    keep_id = keep.start_iteration("base:tiny", "b1")
    other_line = _manager(mlflow_server, line + "-x")
    other_id = other_line.start_iteration("base:tiny", "b1")
    doomed = _manager(mlflow_server, line)
    doomed_id = doomed.start_iteration("base:tiny", "b10")

    stale = _manager(mlflow_server, line)
    stale.start_iteration("base:tiny", "b10")
    stale.experiment_id = keep_id  # a wrong id must not delete another iteration
    with pytest.raises(RuntimeError, match="not deleting"):
        stale.delete_iteration()

    doomed.delete_iteration()
    client = MlflowClient(mlflow_server.url)
    assert client.get_experiment(doomed_id).lifecycle_stage == "deleted"
    assert client.get_experiment(keep_id).lifecycle_stage == "active"
    assert client.get_experiment(other_id).lifecycle_stage == "active"
    # starting the iteration again restores (not duplicates) it
    assert _manager(mlflow_server, line).start_iteration("base:tiny", "b10") == doomed_id


def test_set_alias_moves_blue_only_when_asked(first_iteration, mlflow_server):
    manager, result = first_iteration["manager"], first_iteration["result"]
    name = result.registered_name
    assert manager.get_version_by_alias(name, "blue") is None
    manager.set_alias(name, "blue", result.version)
    assert manager.get_version_by_alias(name, "blue") == result.version
    assert manager.resolve_start_ref(f"models:/{name}@blue") == ModelRef("run", result.best_run_id)


def test_model_logged_outside_the_manager_is_found_by_run_id(mlflow_server, tiny_base):
    from finetuning.experiments.model_logging import log_embeddings_model

    client = MlflowClient(mlflow_server.url)
    run = client.create_run(client.create_experiment(f"plain-{uuid.uuid4().hex[:8]}"))
    model = load_model(tiny_base)
    logged = log_embeddings_model(model, run_id=run.info.run_id, tracking_uri=mlflow_server.url)
    client.set_terminated(run.info.run_id)
    manager = _manager(mlflow_server, "any-line")
    assert manager.get_model_uri_by_run_id(run.info.run_id) == logged.model_uri  # no tag: found by source run
    loaded = manager.download_model_by_run_id(run.info.run_id)
    np.testing.assert_array_equal(loaded.encode_queries(PROBE).numpy(), model.encode_queries(PROBE).numpy())
    bare = client.create_run(run.info.experiment_id)
    with pytest.raises(Exception, match="no logged model"):
        manager.download_model_by_run_id(bare.info.run_id)


def test_a_model_line_with_a_quote_works_through_every_filter(mlflow_server, tiny_base):
    line = f"o'brien's line {uuid.uuid4().hex[:6]}"  # a quote must neither break nor change a filter
    first = _manager(mlflow_server, line)
    first.start_iteration("base:tiny", "b1")
    params = FineTuningParams(query_lr=1e-4)
    first.start_run(params, SETTINGS)
    first.save_metric(MetricValue("val_margin", 0.4, 0))
    assert first.save_model(load_model(tiny_base))
    first.finish_run()
    assert first.finished_run(params) is not None
    outcome = first.finish_iteration()
    second = _manager(mlflow_server, line)
    second.start_iteration("base:tiny", "b2")
    assert second.previous_iteration_experiment_id() == first.experiment_id
    assert [p.id() for p in second.get_previous_iteration_top_params()] == [params.id()]
    assert second.model_choice(outcome.name, outcome.version).run_id == outcome.run_id


def test_runs_an_interrupted_attempt_left_running_are_killed_by_the_next(mlflow_server, tiny_base):
    line = f"test-killed-{uuid.uuid4().hex[:8]}"

    def attempt(task_id: str) -> ExperimentsManager:
        manager = ExperimentsManager(mlflow_server.url, line, main_metric="val_margin",
                                     run_tags={"clicktune.task_id": task_id})
        manager.start_iteration("base:tiny", "b")
        return manager

    killed = attempt("task-1")
    left = killed.start_run(FineTuningParams(query_lr=1e-4), SETTINGS)  # the worker dies here: never finished
    other = attempt("task-2")  # another live task of the same iteration
    theirs = other.start_run(FineTuningParams(query_lr=2e-4), SETTINGS)
    client = MlflowClient(mlflow_server.url)
    assert client.get_run(left).data.tags["clicktune.task_id"] == "task-1"

    result = run_iteration(attempt("task-1"), lambda params, tracker: _train_tiny(tracker, tiny_base, 0.5),
                           start_ref="base:tiny", batch_id="b", settings=SETTINGS, space=SPACE, max_evals=1)

    assert client.get_run(left).info.status == "KILLED"
    assert client.get_run(theirs).info.status == "RUNNING"  # never another task's run
    assert client.get_run(result.best_run_id).info.status == "FINISHED"


def _train_tiny(tracker, tiny_base, quality: float) -> float:
    tracker.save_metric(MetricValue("val_margin", quality, 0))
    tracker.save_model(load_model(tiny_base))
    return quality
