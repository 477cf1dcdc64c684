"""Retrieval metrics on held-out sessions: nDCG@10, MRR@10, Recall@k of clicked items.

Each distinct held-out query (sessions grouped by query text) is ranked against the validation
pool with the current model. A result's graded relevance is its click weight (the context's
confidence calculator, 1 per click without one) summed over the query's sessions, divided by the
number of sessions and clipped to 1: with inverse-propensity weights that is the click model's
relevance estimate, so a stray click among many sessions of a query gains little and a result
clicked whenever it was looked at gains fully (a query seen once: every click gains 1). With a
relevance model as the calculator (:class:`~finetuning.click_relevance.ClickRelevanceModel`) a
clicked result's gain is its posterior probability of relevance instead, and a query whose
clicked results are all more likely noise than relevant (posterior < 0.5) is left out. The
pool is every result shown in the held-out sessions (plus any ``extra_pool_ids``), so a
validation costs one encoding of a few hundred items, not the corpus; with the context's
embeddings cache those are the rows the validation steps already computed.

That shared pool favours the start model: the results it showed a query were its own top k over
the whole corpus, so it ranks every other query's results below them, while a trained model that
lifts another query's result (unjudged for this query, perhaps relevant) only loses by it. With
``own_results_only`` each query is ranked against the results its own sessions showed — the
comparison clicks can judge without that bias (a reordering of what was shown), at the same cost;
the calculator then names its figures with ``name_prefix`` (``own_ndcg@10``, ``val_own_ndcg@10``
once validated) so that both pools can be computed in one validation. With ``grade_all_shown``
(and a relevance model) every result a query's sessions showed is graded by its posterior, not
only the clicked ones: a relevant result the users did not reach (below a satisfying click, or
rarely examined) is not scored as irrelevant, so a model that lifts it is not penalised.
With ``randomized_only`` only exploration sessions (:attr:`FineTuningInput.randomized`: the
results shown in a random order) judge; with ``grade_all_shown`` and ``prior_by_rank=False``
beside it no label carries the start model's order, neither through where a result was shown nor
through which results the users reached first — the judge that can see a model reorder what the
start model showed (``retrieval_randomized``).
Item parts (long-text chunks) are ranked and then mapped back to their object, keeping each
object's best position. Uses :mod:`finetuning.metrics.retrieval`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Sequence

from finetuning.features_extractor import FineTuningFeatures
from finetuning.inputs.input import FineTuningInput
from finetuning.metrics.base import MetricCalculator, MetricContext
from finetuning.metrics.retrieval import retrieval_scores, top_k_ids
from finetuning.rankers import ranker_name


class HeldOutRetrievalMetrics(MetricCalculator):
    def __init__(self, ks: Sequence[int] = (10, 100), extra_pool_ids: Iterable[str] = (), batch_size: int = 64,
                 own_results_only: bool = False, name_prefix: str = "", grade_all_shown: bool = False,
                 prior_by_rank: bool = True, randomized_only: bool = False, min_queries: int = 1) -> None:
        self.ks = tuple(ks)
        self.extra_pool_ids = list(extra_pool_ids)
        self.batch_size = batch_size
        self.own_results_only = own_results_only
        self.name_prefix = name_prefix
        self.grade_all_shown = grade_all_shown
        self.prior_by_rank = prior_by_rank
        self.randomized_only = randomized_only
        self.min_queries = min_queries
        self.last_per_query: dict[str, list[float]] = {}
        self.last_queries: list[str] = []  # the query texts ``last_per_query``'s values belong to, in order
        self.reset()

    def reset(self) -> None:
        self._inputs: list[FineTuningInput] = []

    def update(self, features: FineTuningFeatures | None, inputs: Sequence[FineTuningInput]) -> None:
        self._inputs.extend(inputs)

    def compute(self, context: MetricContext) -> dict[str, float]:
        """Means over the held-out queries; the per-query values stay in ``last_per_query`` (for a
        paired comparison of two validations, see :class:`finetuning.callbacks.KeepBestWeights`)."""
        inputs = [item for item in self._inputs if item.randomized] if self.randomized_only else self._inputs
        queries, per_query = _scores_per_query(inputs, context, self.ks, self.extra_pool_ids, self.batch_size,
                                               own_results_only=self.own_results_only, grade_all_shown=self.grade_all_shown,
                                               prior_by_rank=self.prior_by_rank)
        # a judge of fewer queries than min_queries records nothing: too few to choose weights by
        judged = len(queries) >= self.min_queries
        self.last_per_query = {f"{self.name_prefix}{name}": values for name, values in per_query.items()} if judged else {}
        self.last_queries = queries if judged else []
        return _means(self.last_per_query)


EXPLORATION_PREFIX = "val_rand_"


def judge_metric(main_metric: str, recorded: Mapping[str, float]) -> str:
    """The held-out figure that chooses between weights: the main metric's exploration twin
    (``val_ndcg@10`` → ``val_rand_ndcg@10``, the ``retrieval_randomized`` calculator) when the
    validation ``recorded`` it — the held-out sessions hold enough exploration sessions — else the
    main metric. Exploration sessions are the only held-out evidence whose labels do not carry the
    start model's order; the judges of the other sessions favour the start (docs/engine.md)."""
    return _recorded_twin(EXPLORATION_PREFIX, main_metric, recorded) or main_metric


def _recorded_twin(prefix: str, main_metric: str, recorded: Mapping[str, float]) -> str | None:
    """``val_ndcg@10`` → ``<prefix>ndcg@10`` when the validation recorded it, else None."""
    twin = prefix + main_metric.removeprefix("val_")
    return twin if main_metric.startswith("val_") and twin in recorded else None


OWN_RESULTS_PREFIX = "val_own_"


def proof_metric(main_metric: str, recorded: Mapping[str, float]) -> str:
    """The held-out figure on which trained weights must prove themselves better than the start
    (the keeper's burden of proof and the quality gate's judge): both judges as one
    (``val_both_ndcg@10``, :func:`combine_judges`) when the exploration twin was recorded; else
    the main metric's own-results twin (``val_ndcg@10`` → ``val_own_ndcg@10``, each query ranked
    among the results its own sessions showed) when recorded; else the main metric. The main
    metric ranks every held-out query against the results shown for all of them, the start
    model's own top results, so a trained model that lifts another query's result only loses by
    it: a fair figure to choose among trained checkpoints by, not to prove a gain over the start
    with (docs/engine.md, "The gate's judge"). With exploration sessions the keeper and the gate
    weigh this figure beside the exploration twin (:func:`proof_witnesses`; docs/engine.md, "Two
    witnesses, one level")."""
    return (_recorded_twin(BOTH_PREFIX, main_metric, recorded) or _recorded_twin(EXPLORATION_PREFIX, main_metric, recorded)
            or _recorded_twin(OWN_RESULTS_PREFIX, main_metric, recorded) or main_metric)


BOTH_PREFIX = "val_both_"


def combine_judges(per_query: Mapping[str, Sequence[float]], queries: Mapping[str, Sequence[str]]) -> dict[str, list[float]]:
    """Both held-out judges as one figure: ``val_both_<m>`` per query is the mean of the query's
    ``val_own_<m>`` and ``val_rand_<m>`` where it has both, else the one it has (``queries``:
    metric → the query texts its values belong to). Which judges a query has depends on its
    held-out sessions, not on the model, so two validations' lists pair up; a paired difference
    of this figure is, per query, the mean of the two judges' differences: one test that weighs the
    exploration sessions' evidence (unbiased, few queries) and the own-results evidence (every
    judged query, labels that favour the start's order) without testing twice. The exploration
    judge's queries come first, in its order, so its values pair with the first of these
    (:func:`~finetuning.metrics.paired.strongest_witness` relies on it). Empty unless both judges
    recorded the metric."""
    out: dict[str, list[float]] = {}
    for own_name in [name for name in per_query if name.startswith(OWN_RESULTS_PREFIX)]:
        metric = own_name.removeprefix(OWN_RESULTS_PREFIX)
        rand_name = EXPLORATION_PREFIX + metric
        if rand_name not in per_query or own_name not in queries or rand_name not in queries:
            continue
        values: dict[str, list[float]] = defaultdict(list)
        for name in (rand_name, own_name):
            for query, value in zip(queries[name], per_query[name]):
                values[query].append(value)
        out[BOTH_PREFIX + metric] = [sum(v) / len(v) for v in values.values()]
    return out


def proof_witnesses(main_metric: str, recorded: Mapping[str, float]) -> tuple[str, ...]:
    """The held-out figures any one of which may prove trained weights better than the start, at
    one level for all (:func:`~finetuning.metrics.paired.strongest_witness`): the exploration twin
    and both judges as one when recorded (the exploration judge alone sees the queries clicked in
    an explored session, without the start's order; both as one sees every judged query); else
    :func:`proof_metric` alone."""
    both = _recorded_twin(BOTH_PREFIX, main_metric, recorded)
    rand = _recorded_twin(EXPLORATION_PREFIX, main_metric, recorded)
    return (rand, both) if both and rand else (proof_metric(main_metric, recorded),)


def _means(per_query: dict[str, list[float]]) -> dict[str, float]:
    return {name: sum(values) / len(values) if values else 0.0 for name, values in per_query.items()}


def evaluate_sessions(
    inputs: Sequence[FineTuningInput],
    context: MetricContext,
    ks: Sequence[int] = (10, 100),
    extra_pool_ids: Iterable[str] = (),
    batch_size: int = 64,
) -> dict[str, float]:
    """Rank each held-out query against the pool; ``{"ndcg@10": ..., "mrr@10": ..., "recall@k": ...}``."""
    return _means(evaluate_sessions_per_query(inputs, context, ks, extra_pool_ids, batch_size))


def evaluate_sessions_per_query(
    inputs: Sequence[FineTuningInput],
    context: MetricContext,
    ks: Sequence[int] = (10, 100),
    extra_pool_ids: Iterable[str] = (),
    batch_size: int = 64,
    *,
    own_results_only: bool = False,
    grade_all_shown: bool = False,
    prior_by_rank: bool = True,
) -> dict[str, list[float]]:
    """:func:`evaluate_sessions` before averaging: each metric's value per held-out query, queries
    in a fixed order (first appearance in ``inputs``), so two models' lists pair up."""
    return _scores_per_query(inputs, context, ks, extra_pool_ids, batch_size, own_results_only=own_results_only,
                             grade_all_shown=grade_all_shown, prior_by_rank=prior_by_rank)[1]


def _scores_per_query(inputs: Sequence[FineTuningInput], context: MetricContext, ks: Sequence[int],
                      extra_pool_ids: Iterable[str], batch_size: int, *, own_results_only: bool, grade_all_shown: bool,
                      prior_by_rank: bool) -> tuple[list[str], dict[str, list[float]]]:
    """(the judged query texts, :func:`evaluate_sessions_per_query`'s lists in their order)."""
    pool: dict[str, str] = {}  # item id (or part id) -> object id
    shown: dict[str, dict[str, None]] = defaultdict(dict)  # query text -> item (or part) ids its sessions showed
    for item in inputs:
        text = context.query_retriever(item.query)
        for object_id in item.results:
            parts = [p for p, o in item.part_to_object_id.items() if o == object_id] or [object_id]
            for part in parts:
                pool[part] = object_id
                shown[text][part] = None
    for object_id in extra_pool_ids:
        pool.setdefault(object_id, object_id)
    relevant = held_out_grades(inputs, context, grade_all_shown=grade_all_shown, prior_by_rank=prior_by_rank)
    queries = [q for q, rel in relevant.items() if rel]
    pool_ids = [i for i in pool if i in context.items_set]
    if not queries or not pool_ids:
        return [], {}
    query_embeddings = context.encode_queries(queries, batch_size=batch_size)
    item_embeddings = context.encode_items(pool_ids, batch_size=batch_size)
    similarity = ranker_name(context.ranker)
    if own_results_only:
        row = {item_id: index for index, item_id in enumerate(pool_ids)}
        ranked_parts = []
        for index, text in enumerate(queries):
            own = [i for i in shown[text] if i in row]
            rows = item_embeddings[[row[i] for i in own]]
            ranked_parts += top_k_ids(query_embeddings[index : index + 1], rows, own, k=max(ks) * 4, similarity=similarity)
    else:
        ranked_parts = top_k_ids(query_embeddings, item_embeddings, pool_ids, k=max(ks) * 4, similarity=similarity)
    ranked: list[list[str]] = []
    for parts in ranked_parts:
        seen: dict[str, None] = {}
        for part in parts:
            seen.setdefault(pool[part], None)
        ranked.append(list(seen))
    return queries, retrieval_scores(ranked, [relevant[q] for q in queries], ks=ks)


def held_out_grades(inputs: Sequence[FineTuningInput], context: MetricContext, *, grade_all_shown: bool = False,
                    prior_by_rank: bool = True) -> dict[str, dict[str, float]]:
    """{query text: {object id: graded relevance}} of the held-out sessions (module docstring);
    a query that judges nothing maps to ``{}``. ``prior_by_rank=False`` grades all shown results
    from the relevance model's overall prior, so that the start model's order is not in the labels."""
    gains: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    sessions: dict[str, int] = defaultdict(int)
    by_query: dict[str, list[FineTuningInput]] = defaultdict(list)
    model_relevance = getattr(context.confidence_calculator, "relevance", None)
    # a relevance model grades by its posterior per query below: its per-session weights are not needed
    confidences = context.confidence_calculator(list(inputs)) if context.confidence_calculator and model_relevance is None else None
    for index, item in enumerate(inputs):
        text = context.query_retriever(item.query)
        sessions[text] += 1
        by_query[text].append(item)
        if item.is_irrelevant:
            continue
        for object_id in item.clicked_ids:
            gains[text][object_id] += confidences[index].get(object_id, 1.0) if confidences else 1.0
    relevant = {text: {o: min(1.0, g / sessions[text]) for o, g in clicked.items()} for text, clicked in gains.items()}
    if model_relevance is None:
        return relevant
    for text, clicked in relevant.items():  # a relevance model grades by its posterior
        posterior = model_relevance(by_query[text], prior_by_rank=prior_by_rank)
        graded = {o: posterior.get(o, 0.0) for o in clicked}
        # a query whose clicks are all more likely noise than not says nothing about ranking
        if max(graded.values(), default=0.0) < 0.5:
            relevant[text] = {}
        elif grade_all_shown:
            relevant[text] = {o: p for o, p in posterior.items() if p > 0}
        else:
            relevant[text] = graded
    return relevant
