"""Hyperopt search spaces over :class:`FineTuningParams`, built from plain configuration.

Configuration maps a field of ``FineTuningParams`` to one distribution (or to a plain value,
which is then fixed)::

    {
        "query_lr": {"loguniform": [1e-6, 1e-4]},     # real bounds, not log bounds
        "margin": {"choice": [0.1, 0.2]},
        "num_fixed_layers": {"quniform": [0, 2, 1]},  # low, high, q
        "negative_downsampling": {"uniform": [0.3, 1.0]},
        "not_irrelevant_only": True,                 # fixed
    }

Supported: ``choice``, ``uniform``, ``loguniform``, ``quniform``, ``qloguniform``, ``randint``
(``[upper]`` or ``[low, high]``), ``normal`` (``[mu, sigma]``). Fields not named keep their
``FineTuningParams`` default. A sample that fails validation (e.g. thresholds out of order)
makes its trial fail, which the search scores as worst.

:data:`DEFAULT_SPACE` searches the fields that matter most for click fine-tuning on
continuous ranges (TPE samples them; no grid to enumerate).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from hyperopt import hp
from hyperopt.pyll import Apply

from finetuning.params import FineTuningParams

SpaceConfig = Mapping[str, Any]

DEFAULT_SPACE: dict[str, Any] = {
    "num_fixed_layers": {"choice": [0, 1, 2]},
    "query_lr": {"loguniform": [1e-6, 1e-4]},
    "items_lr": {"loguniform": [1e-6, 1e-4]},
    "query_weight_decay": {"loguniform": [1e-6, 1e-2]},
    "items_weight_decay": {"loguniform": [1e-6, 1e-2]},
    "margin": {"uniform": [0.05, 0.5]},
    "not_irrelevant_only": {"choice": [True, False]},
    "negative_downsampling": {"uniform": [0.2, 1.0]},
    "min_abs_difference_threshold": {"uniform": [0.0, 0.1]},
    "temperature": {"loguniform": [0.02, 0.2]},
}


def _distribution(label: str, kind: str, args: list[Any]) -> Apply:
    if kind == "choice":
        if not args:
            raise ValueError(f"{label}: choice needs at least one option")
        return hp.choice(label, list(args))
    if kind == "uniform":
        low, high = args
        return hp.uniform(label, low, high)
    if kind == "loguniform":
        low, high = args
        if low <= 0 or high <= low:
            raise ValueError(f"{label}: loguniform needs 0 < low < high, got {args}")
        return hp.loguniform(label, math.log(low), math.log(high))
    if kind == "quniform":
        low, high, q = args
        return hp.quniform(label, low, high, q)
    if kind == "qloguniform":
        low, high, q = args
        return hp.qloguniform(label, math.log(low), math.log(high), q)
    if kind == "randint":
        return hp.randint(label, *args)
    if kind == "normal":
        mu, sigma = args
        return hp.normal(label, mu, sigma)
    raise ValueError(f"{label}: unknown distribution {kind!r}")


def build_space(config: SpaceConfig | None = None) -> dict[str, Any]:
    """A hyperopt space (dict of field → hp expression or constant) from ``config``.

    ``None`` gives :data:`DEFAULT_SPACE`. Unknown field names raise ``ValueError``.
    """
    config = DEFAULT_SPACE if config is None else config
    unknown = sorted(set(config) - set(FineTuningParams.model_fields))
    if unknown:
        raise ValueError(f"unknown FineTuningParams fields in search space: {unknown}")
    space: dict[str, Any] = {}
    for field, spec in config.items():
        if isinstance(spec, Mapping):
            if len(spec) != 1:
                raise ValueError(f"{field}: give exactly one distribution, got {list(spec)}")
            (kind, args), = spec.items()
            space[field] = _distribution(field, kind, list(args) if isinstance(args, (list, tuple)) else [args])
        else:
            space[field] = spec
    return space


def is_space(space: Any) -> bool:
    """True when ``space`` is already a hyperopt space (some value is an hp expression)."""
    return isinstance(space, Mapping) and any(isinstance(v, Apply) for v in space.values())


def params_from_sample(sample: Mapping[str, Any]) -> FineTuningParams:
    """A sampled point → validated ``FineTuningParams`` (numpy scalars made plain, int fields rounded)."""
    values: dict[str, Any] = {}
    for field, value in sample.items():
        value = value.item() if hasattr(value, "item") and not isinstance(value, (list, tuple)) else value
        annotation = FineTuningParams.model_fields[field].annotation
        if annotation is int and isinstance(value, float):
            value = int(round(value))
        values[field] = value
    return FineTuningParams(**values)


def default_point(config: SpaceConfig | None = None) -> dict[str, Any] | None:
    """The engine's defaults (``FineTuningParams()``, the configuration measured on the quality suite)
    as a point of ``config``'s space, for hyperopt's ``points_to_evaluate``: the search's first trial
    runs the measured defaults and TPE explores from there, so a search of one trial is the default
    run and more trials can only add candidates to it. A range takes the default clamped into its
    bounds (a weight decay of 0 becomes ``loguniform``'s lower bound), a ``choice`` the default's
    index; ``None`` when some distribution cannot express its default (a choice without it, a
    quantized or normal distribution).

    >>> default_point({"query_lr": {"loguniform": [1e-6, 1e-4]}, "num_fixed_layers": {"choice": [0, 1]}})
    {'query_lr': 4e-05, 'num_fixed_layers': 0}
    """
    config = DEFAULT_SPACE if config is None else config
    defaults = FineTuningParams()
    point: dict[str, Any] = {}
    for field, spec in config.items():
        if not isinstance(spec, Mapping):
            continue  # a fixed value is not searched
        (kind, args), = spec.items()
        args = list(args) if isinstance(args, (list, tuple)) else [args]
        default = getattr(defaults, field, None)
        if kind == "choice":
            if default not in args:
                return None
            point[field] = args.index(default)
        elif kind in ("uniform", "loguniform") and isinstance(default, (int, float)) and not isinstance(default, bool):
            low, high = args
            point[field] = min(max(float(default), low), high)
        else:
            return None
    return point
