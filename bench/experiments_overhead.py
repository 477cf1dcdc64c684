"""What MLflow tracking costs a fine-tuning iteration, against a real local ``mlflow server``.

Prints JSON lines:

- ``log_model``: our portable pyfunc logging (explicit ``pip_requirements``) vs MLflow inferring
  the requirements (the baseline most projects get by default), seconds and ratio;
- ``trial_overhead``: tracking cost of one trial (start_run, ``--metrics`` save_metric calls,
  save_model, finish_run) vs the skip check a re-delivered task pays instead;
- ``iteration``: a 3-trial search iteration with a trivial trainer vs re-running it (all trials
  skipped), seconds and ratio.

    python bench/experiments_overhead.py [--metrics 20] [--skip-inferred]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--metrics", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-inferred", action="store_true", help="do not measure the inferred-requirements baseline")
    args = parser.parse_args()

    import mlflow
    from mlflow import MlflowClient

    from finetuning.experiments import ExperimentsManager, run_iteration
    from finetuning.experiments.model_logging import MODEL_DIR_ARTIFACT, PYFUNC_CODE_FILE, log_embeddings_model, use_tracking_uri
    from finetuning.models.registry import load_model
    from finetuning.models.tiny import build_tiny_text_model
    from finetuning.params import FineTuningParams, FineTuningSettings
    from finetuning.tracking.tracker import MetricValue
    from worker.local_services import start_mlflow_server

    with tempfile.TemporaryDirectory() as tmp, start_mlflow_server(Path(tmp) / "mlflow") as server:
        model = load_model(build_tiny_text_model(Path(tmp) / "tiny"))
        client = MlflowClient(server.url)
        experiment_id = client.create_experiment(f"bench-{uuid.uuid4().hex[:8]}")

        explicit = []
        for _ in range(args.repeat):
            run = client.create_run(experiment_id)
            started = time.perf_counter()
            log_embeddings_model(model, client, run_id=run.info.run_id)
            explicit.append(time.perf_counter() - started)
        row = {"bench": "log_model", "explicit_requirements_s": round(statistics.median(explicit), 3)}
        if not args.skip_inferred:
            model_dir = Path(tmp) / MODEL_DIR_ARTIFACT
            model.save(model_dir)
            run = client.create_run(experiment_id)
            started = time.perf_counter()
            with use_tracking_uri(server.url), mlflow.start_run(run_id=run.info.run_id):
                mlflow.pyfunc.log_model(name="model", python_model=str(PYFUNC_CODE_FILE),
                                        artifacts={MODEL_DIR_ARTIFACT: str(model_dir)})
            row["inferred_requirements_s"] = round(time.perf_counter() - started, 3)
            row["speedup_vs_inferred"] = round(row["inferred_requirements_s"] / row["explicit_requirements_s"], 1)
        emit(**row)

        manager = ExperimentsManager(server.url, f"bench-{uuid.uuid4().hex[:8]}", main_metric="val_score")
        manager.start_iteration("base:tiny", "batch")
        settings = FineTuningSettings(main_metric="val_score")
        trial, skip = [], []
        for i in range(args.repeat):
            params = FineTuningParams(query_lr=1e-5 * (i + 1))
            started = time.perf_counter()
            manager.start_run(params, settings)
            for step in range(args.metrics):
                manager.save_metric(MetricValue("val_score", step / args.metrics + i, step))
            manager.save_model(model)
            manager.finish_run()
            trial.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert manager.is_run_finished(params)
            skip.append(time.perf_counter() - started)
        emit(bench="trial_overhead", metrics_per_trial=args.metrics,
             tracking_per_trial_s=round(statistics.median(trial), 3),
             skip_check_s=round(statistics.median(skip), 4),
             ratio_skip_vs_trial=round(statistics.median(skip) / statistics.median(trial), 4))

        line = f"bench-{uuid.uuid4().hex[:8]}"

        def train(params, tracker):
            tracker.save_metric(MetricValue("val_score", params.margin, 0))
            tracker.save_model(model)
            return params.margin

        timings = []
        for _ in range(2):
            started = time.perf_counter()
            result = run_iteration(ExperimentsManager(server.url, line, main_metric="val_score"), train,
                                   start_ref="base:tiny", batch_id="b1", settings=settings, max_evals=3, seed=1)
            timings.append((time.perf_counter() - started, result.trained, result.skipped))
        emit(bench="iteration", trials=3, first_s=round(timings[0][0], 3), first_trained=timings[0][1],
             rerun_s=round(timings[1][0], 3), rerun_skipped=timings[1][2],
             ratio_rerun_vs_first=round(timings[1][0] / timings[0][0], 3))


if __name__ == "__main__":
    main()
