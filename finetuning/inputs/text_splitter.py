"""Token-aware splitting of long texts into overlapping parts mapped back to their object.

``TextSplitter(tokenizer, max_tokens=256, overlap=32).split("doc1", text)`` yields
``("doc1", text)`` when it fits, else ``("doc1#0", part0), ("doc1#1", part1), ...``: windows of
``max_tokens`` tokenizer tokens (special tokens excluded) with ``overlap`` tokens in common,
decoded back to text through the tokenizer's offsets so no word is cut in the middle of a token.
"""

from __future__ import annotations

from typing import Any, Iterator

PART_SEPARATOR = "#"


class TextSplitter:
    def __init__(self, tokenizer: Any, max_tokens: int = 256, overlap: int = 32) -> None:
        if max_tokens <= 0 or not 0 <= overlap < max_tokens:
            raise ValueError("need max_tokens > 0 and 0 <= overlap < max_tokens")
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap = overlap

    def split(self, object_id: str, text: Any) -> Iterator[tuple[str, Any]]:
        if not isinstance(text, str):
            yield object_id, text
            return
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        if len(offsets) <= self.max_tokens:
            yield object_id, text
            return
        stride = self.max_tokens - self.overlap
        part = 0
        for start in range(0, len(offsets), stride):
            window = offsets[start : start + self.max_tokens]
            yield f"{object_id}{PART_SEPARATOR}{part}", text[window[0][0] : window[-1][1]]
            part += 1
            if start + self.max_tokens >= len(offsets):
                break
