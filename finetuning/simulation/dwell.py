"""How long a simulated user stays on a clicked result: :class:`DwellTimeModel`.

A click alone does not say whether the result satisfied the user; the time until they come back
to the result list does. Fox et al. ("Evaluating implicit measures to improve web search", ACM
TOIS 2005) found dwell time the strongest single predictor of a satisfied click and introduced the
30-second threshold that later work and public click logs use (e.g. Yandex's relevance prediction
challenge, 2011); Kim et al. ("Modeling dwell time to predict click-level satisfaction", WSDM
2014) found dwell times of satisfied and dissatisfied clicks to follow long-tailed distributions
that overlap widely. Here a click on a relevant result stays a log-normal time with median
``relevant_median`` seconds, a click on an irrelevant one (a stray click, or a misleading snippet
that promised what the page does not hold) one with median ``irrelevant_median``; both share the
spread ``sigma`` (natural log). With the defaults (60 s, 12 s, σ 1.0) 24 % of relevant clicks
return within 30 s and 18 % of irrelevant ones stay longer: dwell is evidence, not a label.

What a service observes is timestamps: a session's events are spaced by the user's reading of
the result list (``scan_seconds``) and by the dwell on each clicked result, so the dwell of every
click but the session's last is the time to the next event. The last click's dwell is not
observed (the user never came back, or came back and left) unless the service reports each
visit's length itself (``reported``: a page beacon; the event's ``meta["dwell_seconds"]``).

    >>> model = DwellTimeModel()
    >>> round(model.dwell(True, np.random.default_rng(0)), 1) > 0
    True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class DwellTimeModel:
    """Log-normal dwell times by relevance (see module docstring).

    Args:
        relevant_median: median seconds on a relevant result (60).
        irrelevant_median: median seconds on an irrelevant result (12).
        sigma: spread of log dwell time, both classes (1.0).
        scan_seconds: (low, high) seconds to read the result list before a click, uniform ((2, 10)).
        reported: also write each click's dwell into its event's ``meta["dwell_seconds"]`` (False:
            only the timestamps show it).
    """

    def __init__(
        self,
        relevant_median: float = 60.0,
        irrelevant_median: float = 12.0,
        sigma: float = 1.0,
        scan_seconds: tuple[float, float] = (2.0, 10.0),
        reported: bool = False,
    ) -> None:
        if relevant_median <= 0 or irrelevant_median <= 0 or sigma <= 0:
            raise ValueError("medians and sigma must be > 0")
        if not 0 <= scan_seconds[0] <= scan_seconds[1]:
            raise ValueError("scan_seconds must be (low, high) with 0 <= low <= high")
        self.relevant_median = relevant_median
        self.irrelevant_median = irrelevant_median
        self.sigma = sigma
        self.scan_seconds = scan_seconds
        self.reported = reported

    def dwell(self, relevant: bool, rng: np.random.Generator) -> float:
        """Seconds spent on a clicked result."""
        median = self.relevant_median if relevant else self.irrelevant_median
        return float(math.exp(math.log(median) + self.sigma * rng.standard_normal()))

    def scan(self, rng: np.random.Generator) -> float:
        """Seconds spent reading the result list before the next click."""
        return float(rng.uniform(*self.scan_seconds))

    def params(self) -> dict[str, Any]:
        return {"name": "lognormal", "relevant_median": self.relevant_median, "irrelevant_median": self.irrelevant_median,
                "sigma": self.sigma, "scan_seconds": list(self.scan_seconds), "reported": self.reported}
