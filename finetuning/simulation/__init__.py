"""Click simulation: rank a BEIR corpus, show the top k, let a simulated user click.

    >>> from finetuning.datasets import BeirDataset
    >>> from finetuning.simulation import ZipfPopularity, make_click_model, simulate_sessions
    >>> sessions = simulate_sessions(BeirDataset.load("shared/data/scifact"), split="train",
    ...                              click_model=make_click_model("dbn", seed=0),
    ...                              popularity=ZipfPopularity())                 # doctest: +SKIP

See ``click_simulator.py`` for the session format and the decisions behind it, ``registry.py``
for the click models by name (PBM, cascade, DBN, UBM, trust bias, misleading snippets) and
``popularity.py`` for sessions per query (uniform or a Zipf law) and ``dwell.py`` for how long a
user stays on a clicked result (seen in the events' timestamps).
"""

from finetuning.simulation.bm25 import BM25Ranker
from finetuning.simulation.cascade import CascadeClickModel, DynamicBayesianNetworkClickModel
from finetuning.simulation.click_model import ClickModel, PositionBasedClickModel, SnippetAttractiveness
from finetuning.simulation.click_simulator import (
    DEFAULT_META_TEMPLATE,
    HeldOutSplitError,
    check_split,
    click_statistics,
    render_meta,
    simulate_sessions,
    write_jsonl,
)
from finetuning.simulation.dwell import DwellTimeModel
from finetuning.simulation.popularity import QueryPopularity, UniformPopularity, ZipfPopularity
from finetuning.simulation.rankers import EmbeddingRanker, Ranker
from finetuning.simulation.registry import (
    CLICK_MODELS,
    DWELL_OBSERVATIONS,
    POPULARITIES,
    make_click_model,
    make_dwell,
    make_popularity,
    parse_params,
)
from finetuning.simulation.trust_bias import TrustBiasClickModel
from finetuning.simulation.ubm import UserBrowsingClickModel

__all__ = [
    "BM25Ranker",
    "CLICK_MODELS",
    "CascadeClickModel",
    "ClickModel",
    "DEFAULT_META_TEMPLATE",
    "DWELL_OBSERVATIONS",
    "DwellTimeModel",
    "DynamicBayesianNetworkClickModel",
    "EmbeddingRanker",
    "HeldOutSplitError",
    "POPULARITIES",
    "PositionBasedClickModel",
    "QueryPopularity",
    "Ranker",
    "SnippetAttractiveness",
    "TrustBiasClickModel",
    "UniformPopularity",
    "UserBrowsingClickModel",
    "ZipfPopularity",
    "check_split",
    "click_statistics",
    "make_click_model",
    "make_dwell",
    "make_popularity",
    "parse_params",
    "render_meta",
    "simulate_sessions",
    "write_jsonl",
]
