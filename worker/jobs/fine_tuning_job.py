"""The ``fine_tuning`` job: from a clickstream batch to a registered (and maybe deployed) better model.

``run(ctx)`` follows the job contract of :mod:`worker.lifecycle` (claim, lease, retries and the
final status are the runner's). The steps, each in one place:

1. **settings**: ``FineTuningSettings`` from the task options (:mod:`worker.jobs.fine_tuning.training`),
   the loader config and the search space — anything invalid is ``refused`` before any work.
2. **batch** (:mod:`worker.jobs.fine_tuning.batch_reader`): an open batch is released first (release id
   ``fine_tuning:<task id>``); unknown batch, no sessions, no clicks → ``refused``.
3. **sessions → inputs** (``finetuning.inputs.sessions_to_inputs``).
4. **items** (:mod:`worker.jobs.fine_tuning.items`): every shown result is loaded through
   ``options.loader``; items missing at their source are removed from the sessions and counted
   (``items_missing``); nothing usable left → ``refused``.
5. **split** by query (``TrainTestSplitter(test_size)``) and the ``ItemsSet``.
6. **start model** (:mod:`worker.jobs.fine_tuning.start_model`): ``base:<name>`` or downloaded from MLflow.
7. **iteration** (``finetuning.experiments.run_iteration``): hyperopt on a model line's first
   iteration, the best earlier parameters later; trials already finished in MLflow are skipped; the
   best run's model is registered with alias ``candidate``. Cancel stops the running trial after
   its current batch (``StopOnRequest``) and ends the task ``canceled``.
8. **quality gate** (:mod:`worker.jobs.fine_tuning.quality_gate`): paired per held-out query (the
   values the best run recorded, of ``gate_metric`` when the task names one, else of the keeper's
   witnesses: the exploration judge and both judges as one, the stronger at a bar set for the two,
   or each query ranked among its own shown results without exploration sessions), the
   candidate's mean gain over the start model must exceed the bar at level ``gate_z`` on at least
   ``min_gate_queries`` queries (plus ``min_improvement``);
   its figures are the result's ``gate``. When the best run's keeper kept the start weights, the
   candidate is the start model: not passed, and the reason is the keeper's test (rule ``keeper``).
9. **report**: the registered version gets a description (before/after, the gate's decision and
   reason, task id, data digest) and its model card is rewritten with them
   (``ExperimentsManager.record_decision``); a PNG (:mod:`worker.jobs.fine_tuning.report`) is
   logged to the best run. Runs are named ``t<task>-trial<n>`` and tagged with the task and its data
   (:class:`~finetuning.experiments.provenance.RunContext`, built from
   :mod:`worker.jobs.fine_tuning.data_summary`).
10. **deploy**: with ``deploy_as_blue`` and a passed gate, a reindex task is enqueued
    (``source_run_id`` = start model, ``dest_run_id`` = best run, ``wait_on_conflict``,
    ``parent_id`` = this task, idempotency key ``fine_tuning:<task id>:reindex``, so a redelivered
    task never creates a second one).

Errors of MLflow, Mongo, the loader's source or the trainer are raised: the lifecycle retries the
task and ends it ``failed`` with the detail once its attempts are used. The clickstream is never
modified (apart from releasing an open batch), so a retry reads the same batch; trials that already
finished in MLflow are not trained again.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from dao.blue_pointer import BluePointers
from dao.task_documents import FineTuningOptions, FineTuningResult, QualityGateResult
from dao.tasks import LeaseLost
from finetuning.experiments import IterationResult, build_space, naming, release_memory, run_iteration
from finetuning.experiments.client import tracking_client
from finetuning.experiments.mlflow_manager import ExperimentsManager
from finetuning.experiments.model_card import GateOutcome
from finetuning.experiments.provenance import RunContext
from finetuning.inputs import ItemsSet, TrainTestSplitter, sessions_to_inputs
from finetuning.model_ref import ModelRef
from finetuning.params import FineTuningSettings
from worker.jobs.fine_tuning.batch_reader import read_batch
from worker.jobs.fine_tuning.data_summary import first_pass, summarise
from worker.jobs.fine_tuning.items import collect_item_refs, create_task_loader, drop_missing, load_items
from worker.jobs.fine_tuning.quality_gate import GateDecision, gate_witnesses, start_kept, witness_gate
from worker.jobs.fine_tuning.report import log_report
from worker.jobs.fine_tuning.start_model import default_model_line, load_start_model
from worker.jobs.fine_tuning.training import TrialRunner, build_settings
from worker.lifecycle import TaskCanceled, TaskContext, TaskRefused
from worker.lifecycle.errors import safe_detail

log = logging.getLogger(__name__)


def run(ctx: TaskContext) -> dict:
    """Fine-tune ``ctx.task.embedding_model_id`` on batch ``ctx.task.batch_id`` (see module docstring)."""
    task, options = ctx.task, ctx.task.options
    tracking_uri = ctx.settings.mlflow_tracking_uri
    start_ref = task.embedding_model_id

    # 1. everything the task asks for must make sense before any work
    ctx.progress("validating", 0.0)
    settings = build_settings(options, ctx.settings.train_mini_batch_size)
    if options.search_space is not None:
        try:
            build_space(options.search_space)
        except (ValueError, TypeError, KeyError) as exc:
            raise TaskRefused(f"options.search_space is invalid: {safe_detail(exc)}") from None
    start_model = runner = None
    try:
        with create_task_loader(options.loader) as loader:
            # 2-3. the batch's sessions
            ctx.stage("reading batch", 0.0, batch_id=task.batch_id)
            batch = read_batch(ctx.db, task.batch_id, release_id=f"fine_tuning:{task.id}",
                               on_page=lambda n: ctx.progress("reading batch", None, sessions_read=n))
            inputs = sessions_to_inputs(batch.sessions)
            refs = collect_item_refs(batch.sessions)
            sessions_total = len(batch.sessions)
            raw_data, clicks = first_pass(batch.sessions), batch.clicks
            del batch

            # 4. the items they showed
            ctx.stage("loading items", 0.0, items_total=len(refs))
            loaded = load_items(loader, refs, fields=options.text_fields,
                                on_page=lambda done, total: ctx.progress("loading items", done / total,
                                                                         items_done=done, items_total=total),
                                should_stop=ctx.raise_if_canceled)
            inputs, sessions_dropped = drop_missing(inputs, loaded.contents)
            if loaded.failures:
                log.warning("fine_tuning %s: %d item(s) missing, e.g. %s", task.id, len(loaded.failures),
                            "; ".join(f"{f.id}: {f.reason}" for f in loaded.failures[:3]))
            if not any(item.clicked_ids for item in inputs):
                raise TaskRefused(f"no usable session left in batch {task.batch_id!r}: {len(loaded.failures)} of "
                                  f"{len(refs)} items could not be loaded and no session with a click on a loaded "
                                  "item remains")

            # 5. split by query, items set
            ctx.stage("splitting", 0.0, sessions_used=len(inputs), items_missing=len(loaded.failures))
            train, test = TrainTestSplitter(test_size=options.test_size, random_state=options.seed)(inputs)
            if not any(item.clicked_ids for item in train) or not any(item.clicked_ids for item in test):
                raise TaskRefused(f"batch {task.batch_id!r} has too few distinct clicked queries to train and hold "
                                  f"some out ({len(train)} train / {len(test)} held-out sessions with test_size="
                                  f"{options.test_size:g})")
            items = ItemsSet(loaded.contents)
            data = summarise(task.batch_id, raw_data, clicks=clicks, sessions_used=len(inputs),
                             train_sessions=len(train), held_out_sessions=len(test), items_total=len(refs),
                             contents=loaded.contents, items_missing=len(loaded.failures),
                             loader_config=options.loader)
            del loaded.contents

            # 6. the start model and its model line
            ctx.stage("loading start model", 0.0, start_model=start_ref)
            start_model = load_start_model(start_ref, tracking_uri, options.max_seq_length, should_stop=ctx.should_stop)
            model_line = options.model_line or default_model_line(start_ref, tracking_client(tracking_uri, should_stop=ctx.should_stop))
            manager = ExperimentsManager(tracking_uri, model_line, main_metric=settings.main_metric,
                                         higher_is_better=settings.higher_is_better, should_stop=ctx.should_stop,
                                         run_tags={naming.TAG_TASK_ID: task.id})
            context = RunContext(task_id=task.id, kind="fine_tuning", model_line=model_line, batch_id=task.batch_id,
                                 attempt=task.attempt, data=data)

            # 7. the iteration: search or continue, train, register the best
            runner = TrialRunner(start_model, train, test, items, settings, progress=ctx.progress,
                                 should_stop=ctx.should_stop, raise_if_canceled=ctx.raise_if_canceled)
            runner.state.total = options.max_evals
            ctx.stage("training", 0.0, trial=0, trials_total=options.max_evals, model_line=model_line)
            iteration = run_iteration(manager, runner, start_ref=start_ref, batch_id=task.batch_id, settings=settings,
                                      space=options.search_space, max_evals=options.max_evals, seed=options.seed,
                                      on_trial=runner.on_trial, fatal_exceptions=(TaskCanceled, LeaseLost),
                                      context=context)
            ctx.raise_if_canceled()

            # 8. quality gate on the held-out sessions
            ctx.stage("evaluating", 1.0)
            before, after = iteration.metrics_before, iteration.metrics_after
            main = settings.main_metric
            gate = _gate(manager, iteration, options, settings)

            # 9. report: the version's description and model card, the PNG
            ctx.stage("reporting", 1.0)
            _record_decision(manager, iteration, gate)
            chose = iteration.quality_metric or main  # the held-out figure that chose the weights
            report = _report(manager, iteration, chose, before, after, task.id, gate)

            # 10. deploy as blue through a reindex task
            deployed, reason, reindex_task_id = _deploy(ctx, gate, start_ref, iteration.best_run_id)
            ctx.progress("finished", 1.0, best_metric=after.get(chose))
            result = FineTuningResult(
                best_run_id=iteration.best_run_id,
                best_model_uri=iteration.model_uri,
                registered_model_name=iteration.registered_name,
                registered_model_version=iteration.version,
                metrics_before=before,
                metrics_after=after,
                reindex_task_id=reindex_task_id,
                main_metric=main,
                quality_metric=iteration.quality_metric,
                deployed=deployed,
                deploy_reason=reason,
                sessions_used=len(inputs),
                items_missing=len(refs) - len(items),
                trials_trained=iteration.trained,
                trials_skipped=iteration.skipped,
                report_artifact=report,
                gate=QualityGateResult(**asdict(gate)),
                # extras (FineTuningResult allows them)
                model_line=model_line,
                experiment_id=iteration.experiment_id,
                iteration_mode=iteration.mode,
                trials_failed=sum(t.status == "failed" for t in iteration.trials),
                sessions_total=sessions_total,
                sessions_dropped=sessions_dropped,
                train_sessions=len(train),
                held_out_sessions=len(test),
                items_total=len(refs),
                start_model=start_ref,
                quality_gate_passed=gate.passed,
            )
            return result.model_dump()
    finally:
        del start_model, runner
        release_memory()


# --------------------------------------------------------------------------------------------
# steps 9-10
# --------------------------------------------------------------------------------------------

def _gate(manager: ExperimentsManager, iteration: IterationResult, options: FineTuningOptions,
          settings: FineTuningSettings) -> GateDecision:
    """The quality gate on the best run's held-out figures; when that run kept the start weights,
    the keeper's test is the decision (there is no trained model to compare)."""
    before, after, main = iteration.metrics_before, iteration.metrics_after, settings.main_metric
    limits = dict(min_gate_queries=options.min_gate_queries, gate_z=options.gate_z,
                  min_improvement=options.min_improvement)
    if iteration.keeper is not None and iteration.keeper.start_kept:
        return start_kept(iteration.keeper, before.get(iteration.keeper.metric), **limits)
    witnesses = gate_witnesses(options.gate_metric, main, after)
    per_query = {metric: manager.held_out_per_query(iteration.best_run_id, metric) for metric in witnesses}
    if main in witnesses and main not in after:
        after = {**after, main: iteration.best_quality}
    return witness_gate(witnesses, before, after, per_query, higher_is_better=settings.higher_is_better, **limits)


def _report(manager: ExperimentsManager, iteration: IterationResult, main: str, before: dict[str, float],
            after: dict[str, float], task_id: str, gate: GateDecision) -> str | None:
    try:
        return log_report(manager.client, iteration.best_run_id, main_metric=main, metrics_before=before,
                          metrics_after=after,
                          title=f"{iteration.registered_name} v{iteration.version} — task {task_id}",
                          note=f"quality gate {'passed' if gate.passed else 'not passed'}: {gate.reason}")
    except Exception as exc:  # a report is a convenience: never fail a trained task for it
        log.warning("fine-tuning report of run %s failed: %s", iteration.best_run_id, safe_detail(exc))
        return None


def _record_decision(manager: ExperimentsManager, iteration: IterationResult, gate: GateDecision) -> None:
    """Describe the registered version (before/after, the gate's decision, task, data digest) and
    rewrite its model card; a failure is logged, never fails a trained task."""
    try:
        manager.record_decision(iteration.registered_name, iteration.version,
                                GateOutcome(passed=gate.passed, reason=gate.reason))
    except Exception as exc:
        log.warning("describing %s v%s failed: %s", iteration.registered_name, iteration.version, safe_detail(exc))


def _deploy(ctx: TaskContext, gate: GateDecision, start_ref: str, best_run_id: str) -> tuple[bool, str, str | None]:
    """``(deployed, reason, reindex task id)``; ``deployed`` = a reindex to the candidate was enqueued."""
    task = ctx.task
    if not task.deploy_as_blue:
        return False, f"deploy_as_blue not requested; {gate.reason}", None
    if not gate.passed:
        return False, f"not deployed: {gate.reason}", None
    if ModelRef.parse(start_ref).kind in ("base", "run") and not BluePointers(ctx.db).find_by_model(start_ref):
        return False, (f"not deployed: the start model {start_ref} is not blue in any deployment "
                       "(build the first index with `clicktune index`); " + gate.reason), None
    reindex_task_id = _enqueue_reindex(ctx, start_ref, best_run_id)
    return True, f"reindex task {reindex_task_id} enqueued: {gate.reason}", reindex_task_id


def _enqueue_reindex(ctx: TaskContext, start_ref: str, best_run_id: str) -> str:
    """Enqueue the blue/green reindex (idempotent per fine-tuning task)."""
    from worker.client import ClicktuneClient

    settings = ctx.settings
    broker = None
    if settings.broker != "stub":
        from worker.broker import build_broker

        broker = build_broker(settings)
    try:
        client = ClicktuneClient(settings, db=ctx.db, broker=broker)
        return client.enqueue_reindex({
            "source_run_id": start_ref,
            "dest_run_id": str(ModelRef.parse(best_run_id)),
            "wait_on_conflict": ctx.task.wait_on_conflict,
            "parent_id": ctx.task.id,
            "idempotency_key": f"fine_tuning:{ctx.task.id}:reindex",
        })
    finally:
        if broker is not None:
            broker.close()
