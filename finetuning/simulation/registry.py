"""Simulated users and query popularities by name: one registry for the CLI, benchmarks and tests.

    >>> make_click_model("dbn", seed=3, gamma=0.7).params()["gamma"]
    0.7
    >>> sorted(CLICK_MODELS)
    ['cascade', 'dbn', 'dbn-misleading', 'misleading', 'pbm', 'trust-bias', 'ubm']

Click models (each class's docstring has its citation, parameters and defaults):

==================  ======================================================================
``pbm``             position-based model, examination 1/rank (the simulator's default)
``cascade``         cascade model: examine in order, one click, stop
``dbn``             dynamic Bayesian network: stop when satisfied or out of perseverance
``ubm``             user browsing model: examination by rank and distance to the last click
``trust-bias``      PBM whose irrelevant-click rate falls with rank (trust in the order)
``misleading``      PBM with per-(query, document) snippet attractiveness, 10 % of the
                    irrelevant pairs misleading (clicked in every session of the query)
``dbn-misleading``  DBN with the same misleading snippets
==================  ======================================================================

Parameters given to :func:`make_click_model` go to the model's constructor; for the
``*misleading`` models, the names of
:class:`~finetuning.simulation.click_model.SnippetAttractiveness` (``misleading_share``,
``misleading``, ``relevant_low``, ``relevant_high``, ``irrelevant``) go to the snippets. The
model's ``seed`` (and its snippets') is the ``seed`` argument.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Iterable

from finetuning.simulation.cascade import CascadeClickModel, DynamicBayesianNetworkClickModel
from finetuning.simulation.click_model import ClickModel, PositionBasedClickModel, SnippetAttractiveness
from finetuning.simulation.dwell import DwellTimeModel
from finetuning.simulation.popularity import QueryPopularity, UniformPopularity, ZipfPopularity
from finetuning.simulation.trust_bias import TrustBiasClickModel
from finetuning.simulation.ubm import UserBrowsingClickModel

_SNIPPET_PARAMS = {name for name in inspect.signature(SnippetAttractiveness).parameters if name != "seed"}


def _with_snippets(model_class: type[ClickModel]) -> Callable[..., ClickModel]:
    def build(seed: int = 0, **params: Any) -> ClickModel:
        snippet_params = {key: params.pop(key) for key in list(params) if key in _SNIPPET_PARAMS}
        return model_class(snippets=SnippetAttractiveness(seed=seed, **snippet_params), seed=seed, **params)

    build.__doc__ = f"{model_class.__name__} with misleading snippets (SnippetAttractiveness)."
    return build


def _plain(model_class: type[ClickModel]) -> Callable[..., ClickModel]:
    def build(seed: int = 0, **params: Any) -> ClickModel:
        return model_class(seed=seed, **params)

    build.__doc__ = model_class.__doc__
    return build


CLICK_MODELS: dict[str, Callable[..., ClickModel]] = {
    "pbm": _plain(PositionBasedClickModel),
    "cascade": _plain(CascadeClickModel),
    "dbn": _plain(DynamicBayesianNetworkClickModel),
    "ubm": _plain(UserBrowsingClickModel),
    "trust-bias": _plain(TrustBiasClickModel),
    "misleading": _with_snippets(PositionBasedClickModel),
    "dbn-misleading": _with_snippets(DynamicBayesianNetworkClickModel),
}

POPULARITIES: dict[str, Callable[..., QueryPopularity]] = {
    "uniform": UniformPopularity,
    "zipf": ZipfPopularity,
}


DWELL_OBSERVATIONS = ("none", "timestamps", "reported")
"""What a simulated log tells of how long users stayed on clicked results: ``none`` (clicks 2–30 s
apart whatever the result), ``timestamps`` (a :class:`DwellTimeModel` spaces the events; the last
click's dwell is not seen), ``reported`` (also each click's ``meta["dwell_seconds"]``)."""


def make_dwell(name: str, **params: Any) -> DwellTimeModel | None:
    """The dwell observation ``name`` of :data:`DWELL_OBSERVATIONS`, built with ``params``."""
    if name not in DWELL_OBSERVATIONS:
        raise KeyError(f"unknown dwell observation {name!r} (known: {', '.join(DWELL_OBSERVATIONS)})")
    return None if name == "none" else DwellTimeModel(reported=name == "reported", **params)


def make_click_model(name: str, seed: int = 0, **params: Any) -> ClickModel:
    """The click model registered as ``name``, built with ``seed`` and ``params``.

    Raises ``KeyError`` for an unknown name and ``TypeError`` for a parameter the model lacks.
    """
    if name not in CLICK_MODELS:
        raise KeyError(f"unknown click model {name!r} (known: {', '.join(sorted(CLICK_MODELS))})")
    return CLICK_MODELS[name](seed=seed, **params)


def make_popularity(name: str, **params: Any) -> QueryPopularity:
    """The query popularity registered as ``name`` (``uniform`` or ``zipf``), built with ``params``."""
    if name not in POPULARITIES:
        raise KeyError(f"unknown popularity {name!r} (known: {', '.join(sorted(POPULARITIES))})")
    return POPULARITIES[name](**params)


def parse_params(items: Iterable[str]) -> dict[str, Any]:
    """``["gamma=0.7", "examination=[1, 0.5]"]`` → ``{"gamma": 0.7, "examination": [1, 0.5]}``:
    each value is read as JSON when it parses, else kept as a string."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params
