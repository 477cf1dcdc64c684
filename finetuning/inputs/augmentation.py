"""Light text augmentation for queries: random word dropout and adjacent swaps.

``augment_text(text, rng, drop_prob=0.1, swap_prob=0.1)`` never returns an empty string and is
deterministic for a seeded ``random.Random``. Off by default (see ``TextQueryRetriever``).
"""

from __future__ import annotations

import random


def augment_text(text: str, rng: random.Random, drop_prob: float = 0.1, swap_prob: float = 0.1) -> str:
    words = text.split()
    if len(words) < 3:
        return text
    kept = [w for w in words if rng.random() >= drop_prob] or words[:1]
    for i in range(len(kept) - 1):
        if rng.random() < swap_prob:
            kept[i], kept[i + 1] = kept[i + 1], kept[i]
    return " ".join(kept)
