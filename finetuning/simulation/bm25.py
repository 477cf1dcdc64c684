"""Okapi BM25 over an in-memory corpus, as a sparse matrix product.

Tokens are lower-cased word tokens (scikit-learn ``CountVectorizer``); the document side is
precomputed once as a ``docs × terms`` matrix of BM25 term weights

    w(t, d) = idf(t) · tf(t, d) · (k1 + 1) / (tf(t, d) + k1 · (1 − b + b · |d| / avgdl))
    idf(t)  = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))          (Lucene's idf, never negative)

so scoring a batch of queries is one sparse product ``Q · Wᵀ`` (query-term counts × weights).
Defaults k1 = 0.9, b = 0.4 (Anserini/Pyserini's BEIR setting); on SciFact this gives test
nDCG@10 ≈ 0.66, the figure in shared/data/README.md.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer

TOKEN_PATTERN = r"(?u)\b\w+\b"


class BM25Ranker:
    """Rank ``corpus_texts`` (``{doc_id: text}`` or a list of texts with ``doc_ids``) with BM25.

    ``rank_many(queries, top_k)`` returns, per query, up to ``top_k`` ``(doc_id, score)`` best
    first; documents sharing no term with the query (score 0) are not returned, as a lexical
    engine would not retrieve them. Ties are broken by corpus order, so results are deterministic.
    """

    name = "bm25"

    def __init__(
        self,
        corpus_texts: Mapping[str, str] | Sequence[str],
        doc_ids: Sequence[str] | None = None,
        k1: float = 0.9,
        b: float = 0.4,
    ) -> None:
        if isinstance(corpus_texts, Mapping):
            self.doc_ids = [str(doc_id) for doc_id in corpus_texts]
            texts = list(corpus_texts.values())
        else:
            texts = list(corpus_texts)
            self.doc_ids = [str(doc_id) for doc_id in (doc_ids if doc_ids is not None else range(len(texts)))]
        if len(self.doc_ids) != len(texts):
            raise ValueError(f"{len(self.doc_ids)} ids for {len(texts)} texts")
        if not texts:
            raise ValueError("empty corpus")
        self.k1, self.b = k1, b
        self.vectorizer = CountVectorizer(lowercase=True, token_pattern=TOKEN_PATTERN, dtype=np.float32)
        tf = self.vectorizer.fit_transform(texts).tocsr().astype(np.float32)
        n_docs = tf.shape[0]
        df = np.bincount(tf.indices, minlength=tf.shape[1]).astype(np.float32)
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
        lengths = np.asarray(tf.sum(axis=1)).ravel()
        norm = k1 * (1.0 - b + b * lengths / max(float(lengths.mean()), 1e-9))
        rows = np.repeat(np.arange(n_docs), np.diff(tf.indptr))
        values = tf.data
        tf.data = (idf[tf.indices] * values * (k1 + 1.0) / (values + norm[rows])).astype(np.float32)
        self.weights = tf  # docs × terms, BM25 weights
        self._weights_t = sparse.csr_matrix(tf.T)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """``(len(queries), len(doc_ids))`` BM25 scores."""
        query_terms = self.vectorizer.transform(list(queries))
        return np.asarray((query_terms @ self._weights_t).todense(), dtype=np.float32)

    def rank_many(self, queries: Sequence[str], top_k: int, chunk_size: int = 256) -> list[list[tuple[str, float]]]:
        """Top ``top_k`` ``(doc_id, score)`` per query, best first (score > 0 only)."""
        ranked: list[list[tuple[str, float]]] = []
        k = min(top_k, len(self.doc_ids))
        for start in range(0, len(queries), chunk_size):
            block = self.scores(queries[start : start + chunk_size])
            for row in block:
                candidates = np.argpartition(-row, k - 1)[:k] if k < row.shape[0] else np.arange(row.shape[0])
                candidates = np.sort(candidates)  # corpus order, so the stable sort breaks ties by it
                order = candidates[np.argsort(-row[candidates], kind="stable")]
                ranked.append([(self.doc_ids[i], float(row[i])) for i in order if row[i] > 0])
        return ranked

    def rank(self, query: str, top_k: int) -> list[tuple[str, float]]:
        return self.rank_many([query], top_k)[0]
