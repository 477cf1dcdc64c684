"""Lightning callbacks of the fine-tuning engine, taking plain callables (no worker imports).

- :class:`StopOnRequest`: ``should_stop()`` is polled every ``every_n_steps`` training batches;
  when it returns True the Trainer stops cleanly after the batch (the worker passes a check of the
  task's ``cancel_requested`` flag).
- :class:`ProgressReporter`: ``on_progress(dict)`` every ``every_n_steps`` batches and after every
  validation, with ``stage``, ``epoch``, ``step`` (training batches done), ``fraction`` (of
  ``total_steps``), ``train_loss`` and the latest validation metrics.
- :class:`KeepBestWeights`: after each validation, copies the model weights when ``monitor``
  beat every earlier trained checkpoint; at the end restores that copy when held-out sessions show
  it better than the start beyond their noise (a paired per-query test), else the starting weights.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import lightning.pytorch as pl
import torch

from finetuning.keeper_verdict import CANDIDATE_KEPT, START_KEPT, KeeperVerdict
from finetuning.metrics.paired import PairedDifference, paired_difference, strongest_witness


class StopOnRequest(pl.Callback):
    def __init__(self, should_stop: Callable[[], bool], every_n_steps: int = 1) -> None:
        self.should_stop = should_stop
        self.every_n_steps = max(1, every_n_steps)
        self.stopped = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % self.every_n_steps == 0 and self.should_stop():
            self.stopped = True
            trainer.should_stop = True


class ProgressReporter(pl.Callback):
    def __init__(self, on_progress: Callable[[dict], None], total_steps: int | None = None, every_n_steps: int = 10) -> None:
        self.on_progress = on_progress
        self.total_steps = total_steps
        self.every_n_steps = max(1, every_n_steps)
        self.steps_done = 0
        self.last_metrics: dict[str, float] = {}

    def _report(self, trainer, stage: str, extra: dict | None = None) -> None:
        fraction = min(1.0, self.steps_done / self.total_steps) if self.total_steps else None
        loss = trainer.callback_metrics.get("train_loss")
        report = {
            "stage": stage,
            "epoch": trainer.current_epoch,
            "step": self.steps_done,
            "fraction": fraction,
            "train_loss": float(loss) if loss is not None else None,
            **self.last_metrics,
            **(extra or {}),
        }
        self.on_progress(report)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps_done += 1
        if self.steps_done % self.every_n_steps == 0:
            self._report(trainer, "training")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.last_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        self._report(trainer, "validation")


class KeepBestWeights(pl.Callback):
    """Keeps the best validated weights of a run and decides, at the end, between them and the start.

    After each validation the weights are copied when ``monitor`` beats every earlier *trained*
    checkpoint: that copy is the candidate. :meth:`restore` then loads the candidate only when it
    is better than the start beyond the noise of the held-out queries, else the starting weights
    (given by ``initial_score`` and copied at fit start). The burden of proof is on the trained
    weights: a model that must never lower quality keeps the start unless the evidence says
    otherwise, and on a few dozen click-labelled queries a candidate "within the noise" is as
    likely worse as better (docs/engine.md, "The keeper's burden of proof").

    - With per-query values of ``proof_metric`` (default ``monitor``) for both, recorded by the
      validations (:class:`~finetuning.metrics.held_out.HeldOutRetrievalMetrics`), the candidate is
      kept when at least ``min_queries`` held-out queries pair up and their mean difference is above
      the bar of :mod:`finetuning.metrics.paired` at level ``prove_z`` (Student's t; ``prove_z`` ≤ 0
      keeps a candidate that is not worse beyond that many standard errors).
    - With ``witnesses`` (several proof figures, e.g. the exploration judge and both judges as
      one, :func:`~finetuning.metrics.held_out.proof_witnesses`) recorded per query, the strongest
      of them proves or not, at a bar set for all of them
      (:func:`~finetuning.metrics.paired.strongest_witness`); the verdict names it.
    - Without them (another monitor, or a validation that records no per-query values) the
      candidate must strictly beat the start by ``monitor``.

    Parameters: ``monitor`` (``"val_ndcg@10"``), ``mode`` (``"max"``; ``"min"`` for a loss),
    ``initial_score`` (None: no start to fall back on, the candidate always wins),
    ``restore_on_fit_end`` (True), ``prove_z`` (1.645), ``min_queries`` (10), ``proof_metric``
    (None: ``monitor``), ``initial_per_query`` (None), ``witnesses`` (none).
    After :meth:`restore`: ``best_score``, ``best_step`` (0 = the start), ``best_metrics``,
    ``decision`` (``"candidate beats start"`` or ``"start kept"``) and ``proof`` (the paired test,
    None when the means decided); :meth:`verdict` gives both with the level, as a record;
    :meth:`held_out_per_query` gives every metric's per-query values of the start and of the kept weights.
    """

    def __init__(
        self,
        monitor: str = "val_ndcg@10",
        mode: str = "max",
        initial_score: float | None = None,
        restore_on_fit_end: bool = True,
        prove_z: float = 1.645,
        min_queries: int = 10,
        proof_metric: str | None = None,
        initial_per_query: list[float] | None = None,
        witnesses: Sequence[str] = (),
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError("mode must be 'max' or 'min'")
        if min_queries < 2:
            raise ValueError("min_queries must be >= 2")
        self.monitor = monitor
        self.mode = mode
        self.prove_z = prove_z
        self.min_queries = min_queries
        self.proof_metric = proof_metric or monitor
        self.witnesses = tuple(witnesses)
        self.restore_on_fit_end = restore_on_fit_end
        self.start_score = initial_score
        self.start_per_query_by_metric: dict[str, list[float]] = (
            {monitor: list(initial_per_query)} if initial_per_query else {})
        self.start_metrics: dict[str, float] = {}
        self._start_state: dict[str, torch.Tensor] | None = None
        self.candidate_score: float | None = None
        self.candidate_step: int | None = None
        self.candidate_metrics: dict[str, float] = {}
        self.candidate_per_query_by_metric: dict[str, list[float]] = {}
        self._candidate_state: dict[str, torch.Tensor] | None = None
        self.best_score = initial_score
        self.best_step: int | None = 0 if initial_score is not None else None
        self.best_metrics: dict[str, float] = {}
        self.decision: str | None = None
        self.proof: PairedDifference | None = None
        self.last_validated_step: int | None = None
        self.restored = False

    def _better(self, score: float, than: float | None) -> bool:
        if math.isnan(score):
            return False
        if than is None or math.isnan(than):
            return True
        return score > than if self.mode == "max" else score < than

    @staticmethod
    def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.start_score is not None:
            self._start_state = self._snapshot(pl_module.model)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.last_validated_step = trainer.global_step
        # the fine-tuner's own results are float64 (Lightning's callback_metrics hold float32 copies)
        metrics = dict(getattr(pl_module, "last_validation", {}) or {}) or {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        value = metrics.get(self.monitor)
        if value is not None:
            per_query = dict(getattr(pl_module, "last_validation_per_query", {}))
            step = getattr(pl_module, "optimizer_steps", trainer.global_step)
            self.consider(float(value), pl_module.model, step, metrics, per_query.get(self.monitor), per_query)

    def consider(
        self,
        score: float,
        model: torch.nn.Module,
        step: int | None = None,
        metrics: dict[str, float] | None = None,
        per_query: list[float] | None = None,
        per_query_by_metric: dict[str, list[float]] | None = None,
    ) -> bool:
        """Make ``model``'s weights the candidate if ``score`` beats every earlier trained checkpoint
        (``per_query``: ``monitor`` per held-out query; ``per_query_by_metric``: every metric's)."""
        if not self._better(score, self.candidate_score):
            return False
        self.candidate_score = score
        self.candidate_step = step
        self.candidate_metrics = dict(metrics or {})
        self.candidate_per_query_by_metric = {name: list(values) for name, values in (per_query_by_metric or {}).items()}
        if per_query:
            self.candidate_per_query_by_metric[self.monitor] = list(per_query)
        self._candidate_state = self._snapshot(model)
        return True

    def _pairs(self, metric: str) -> tuple[list[float], list[float]] | None:
        after = self.candidate_per_query_by_metric.get(metric)
        before = self.start_per_query_by_metric.get(metric)
        return (before, after) if after and before and len(after) == len(before) else None

    def paired_test(self) -> PairedDifference | None:
        """Candidate − start per held-out query (> 0 is better) by the strongest of ``witnesses``
        when all pair up (``proof_metric`` is then that witness), else by ``proof_metric``; None when
        the two validations do not pair up."""
        pairs = [self._pairs(metric) for metric in self.witnesses]
        if len(pairs) > 1 and all(pairs):
            strongest, test = strongest_witness(pairs, self.prove_z, higher_is_better=self.mode == "max")
            self.proof_metric = self.witnesses[strongest]
            return test
        pair = self._pairs(self.proof_metric)
        return None if pair is None else paired_difference(*pair, higher_is_better=self.mode == "max")

    def held_out_per_query(self) -> dict[str, tuple[list[float], list[float]]]:
        """After :meth:`restore`: metric → (start, kept weights) per held-out query, for the metrics
        validated at both (the same queries in the same order, so they pair up)."""
        kept = self.start_per_query_by_metric if self.decision == START_KEPT else self.candidate_per_query_by_metric
        return {name: (list(values), list(kept[name])) for name, values in self.start_per_query_by_metric.items()
                if name in kept and len(kept[name]) == len(values)}

    def verdict(self) -> KeeperVerdict | None:
        """After :meth:`restore`: the decision and the test behind it; None before."""
        if self.decision is None:
            return None
        return KeeperVerdict(self.decision, self.proof_metric, self.prove_z, self.min_queries,
                             candidate_step=self.candidate_step if self._candidate_state is not None else None,
                             proof=self.proof)

    def _choose_candidate(self) -> bool:
        if self._candidate_state is None or math.isnan(self.candidate_score):
            return False
        if self._start_state is None or self.start_score is None:
            self.decision = CANDIDATE_KEPT
            return True
        self.proof = self.paired_test()
        if self.proof is None:
            proven = self._better(self.candidate_score, self.start_score)
        else:
            proven = self.proof.n >= self.min_queries and self.proof.beyond(self.prove_z)
        if proven:
            self.decision = CANDIDATE_KEPT
        return proven

    def restore(self, model: torch.nn.Module) -> bool:
        """Load the chosen weights (candidate or start) into ``model``; False when nothing was kept."""
        if self._choose_candidate():
            state = self._candidate_state
            self.best_score, self.best_step, self.best_metrics = self.candidate_score, self.candidate_step, self.candidate_metrics
        else:
            self.decision = START_KEPT
            state = self._start_state
            self.best_score, self.best_step = self.start_score, (0 if self.start_score is not None else None)
            self.best_metrics = dict(self.start_metrics) or self.best_metrics
        if state is None:
            return False
        model.load_state_dict(state)
        self.restored = True
        return True

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.restore_on_fit_end:
            self.restore(pl_module.model)
