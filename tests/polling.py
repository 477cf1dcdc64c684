"""Polling helper shared by the multi-process tests."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", poll: float = 0.05):
    """Return the first truthy ``predicate()`` within ``timeout`` seconds, else fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
