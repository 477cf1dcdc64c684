"""BEIR-layout retrieval data sets: a corpus, queries and relevance judgements per split.

A BEIR folder holds::

    corpus.jsonl        {"_id", "title", "text"} per line
    queries.jsonl       {"_id", "text"} per line
    qrels/<split>.tsv   query-id <TAB> corpus-id <TAB> score   (a header line)

:class:`BeirDataset` loads one into memory (ids are kept as strings), answers
``qrels("train")`` / ``qrels("test")``, renders a document as text (``"title. text"``), cuts
small, reproducible slices for tests (:meth:`BeirDataset.subset`) and writes documents as one
JSON file each so the local-file loader can fetch them (:meth:`BeirDataset.write_corpus_files`).

    >>> ds = BeirDataset.load("shared/data/scifact")                         # doctest: +SKIP
    >>> small = ds.subset(n_queries=50, split="train", extra_docs=200)       # doctest: +SKIP

Split hygiene: nothing here mixes splits; ``qrels(split)`` returns only that split's judgements,
and :func:`finetuning.simulation.simulate_sessions` refuses held-out splits unless asked.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

Qrels = dict[str, dict[str, int]]


def _read_jsonl(path: Path) -> Iterable[dict]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                yield json.loads(line)


def _read_qrels(path: Path) -> Qrels:
    qrels: Qrels = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for row in reader:
            if len(row) < 3:
                continue
            query_id, doc_id, score = row[0].strip(), row[1].strip(), row[2].strip()
            try:
                value = int(float(score))
            except ValueError:  # the header line ("query-id corpus-id score")
                continue
            qrels.setdefault(query_id, {})[doc_id] = value
    return qrels


def _unsafe_file_name(doc_id: str) -> bool:
    return not doc_id or "/" in doc_id or "\\" in doc_id or doc_id.startswith(".") or "\x00" in doc_id


@dataclass
class BeirDataset:
    """An in-memory BEIR data set.

    ``corpus`` maps doc id → ``{"title", "text"}``; ``queries`` maps query id → text; the
    judgements of each split are read by :meth:`qrels` and only name documents present in the
    corpus (judgements of dropped documents are removed, queries left without any are dropped).
    ``name`` is the folder name (used in simulated sessions' ``search_meta``).
    """

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels_by_split: dict[str, Qrels] = field(default_factory=dict)
    name: str = "beir"
    directory: Path | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, directory: str | Path, max_docs: int | None = None, seed: int = 0) -> "BeirDataset":
        """Read a BEIR folder. With ``max_docs``, keep every judged document (of all splits) and
        fill up with documents drawn at random (``seed``) until ``max_docs``; if the judged
        documents alone exceed ``max_docs``, a random ``max_docs`` of them are kept."""
        directory = Path(directory)
        for required in ("corpus.jsonl", "queries.jsonl"):
            if not (directory / required).exists():
                raise FileNotFoundError(f"{directory / required} not found (not a BEIR folder?)")
        corpus = {
            str(row["_id"]): {"title": str(row.get("title") or ""), "text": str(row.get("text") or "")}
            for row in _read_jsonl(directory / "corpus.jsonl")
        }
        queries = {str(row["_id"]): str(row.get("text") or "") for row in _read_jsonl(directory / "queries.jsonl")}
        qrels_by_split = {
            path.stem: _read_qrels(path) for path in sorted((directory / "qrels").glob("*.tsv"))
        } if (directory / "qrels").is_dir() else {}
        dataset = cls(corpus=corpus, queries=queries, qrels_by_split=qrels_by_split, name=directory.name, directory=directory)
        if max_docs is not None and max_docs < len(corpus):
            judged = sorted({doc for qrels in qrels_by_split.values() for docs in qrels.values() for doc in docs if doc in corpus})
            rng = random.Random(seed)
            if len(judged) >= max_docs:
                keep = set(rng.sample(judged, max_docs))
            else:
                judged_set = set(judged)
                others = [doc for doc in corpus if doc not in judged_set]
                keep = judged_set | set(rng.sample(others, max_docs - len(judged)))
            dataset = dataset._restricted(keep, dict(qrels_by_split))
        return dataset

    # ------------------------------------------------------------------ access
    @property
    def splits(self) -> list[str]:
        """The split names that have a qrels file (e.g. ``["test", "train"]``)."""
        return sorted(self.qrels_by_split)

    def qrels(self, split: str) -> Qrels:
        """``{query_id: {doc_id: score}}`` of one split (only documents in the corpus)."""
        if split not in self.qrels_by_split:
            raise KeyError(f"split {split!r} not in {self.splits}")
        return self.qrels_by_split[split]

    def query_ids(self, split: str) -> list[str]:
        """Judged query ids of ``split`` that have a query text, in file order."""
        return [query_id for query_id in self.qrels(split) if query_id in self.queries]

    def training_query_ids(self, split: str = "train", held_out: str = "test") -> list[str]:
        """Query ids of ``split`` that may reach training: neither judged in ``held_out`` nor sharing
        its text (after case and whitespace folding) with a ``held_out`` query — BEIR sets repeat some
        texts under other ids across splits (SciFact 2, NFCorpus 4), and such a query would leak."""
        if held_out not in self.qrels_by_split:
            return self.query_ids(split)
        held = set(self.query_ids(held_out))
        held_texts = {" ".join(self.queries[q].lower().split()) for q in held}
        return [q for q in self.query_ids(split)
                if q not in held and " ".join(self.queries[q].lower().split()) not in held_texts]

    def split_of(self, query_id: str) -> list[str]:
        """The splits whose qrels judge ``query_id``."""
        return [split for split, qrels in self.qrels_by_split.items() if query_id in qrels]

    @property
    def doc_ids(self) -> list[str]:
        """Corpus ids in corpus order."""
        return list(self.corpus)

    def doc_text(self, doc_id: str) -> str:
        """The document as one text: ``"title. text"`` (just the text when there is no title)."""
        doc = self.corpus[doc_id]
        title, text = doc.get("title", "").strip(), doc.get("text", "").strip()
        if not title:
            return text
        if not text:
            return title
        separator = " " if title[-1] in ".!?:" else ". "
        return f"{title}{separator}{text}"

    def doc_texts(self, doc_ids: Sequence[str] | None = None) -> dict[str, str]:
        """``{doc_id: doc_text}`` for ``doc_ids`` (default: the whole corpus, in corpus order)."""
        return {doc_id: self.doc_text(doc_id) for doc_id in (doc_ids if doc_ids is not None else self.corpus)}

    def __len__(self) -> int:
        return len(self.corpus)

    # ------------------------------------------------------------------ slicing
    def subset(
        self,
        n_queries: int | None = None,
        split: str | Sequence[str] = "train",
        extra_docs: int = 0,
        seed: int = 0,
        query_ids: Sequence[str] | None = None,
    ) -> "BeirDataset":
        """A small, reproducible slice: ``n_queries`` judged queries drawn at random (``seed``)
        from each split in ``split`` (or exactly ``query_ids``), every document judged for them,
        plus ``extra_docs`` other documents drawn at random. The slice's qrels hold only the
        chosen queries; other splits are emptied unless listed in ``split``."""
        splits = [split] if isinstance(split, str) else list(split)
        rng = random.Random(seed)
        chosen: dict[str, list[str]] = {}
        for name in splits:
            candidates = self.query_ids(name)
            if query_ids is not None:
                wanted = set(query_ids)
                chosen[name] = [q for q in candidates if q in wanted]
            elif n_queries is None or n_queries >= len(candidates):
                chosen[name] = candidates
            else:
                picked = set(rng.sample(candidates, n_queries))
                chosen[name] = [q for q in candidates if q in picked]  # keep file order
        if query_ids is not None:
            missing = set(query_ids) - {q for ids in chosen.values() for q in ids}
            if missing:
                raise KeyError(f"query ids not judged in split(s) {splits}: {sorted(missing)[:5]}")
        judged = {doc for name, ids in chosen.items() for q in ids for doc in self.qrels(name)[q]}
        others = [doc for doc in self.corpus if doc not in judged] if extra_docs else []
        extra = set(rng.sample(others, min(extra_docs, len(others)))) if extra_docs else set()
        qrels_by_split = {name: {q: dict(self.qrels(name)[q]) for q in ids} for name, ids in chosen.items()}
        for name in self.qrels_by_split:
            qrels_by_split.setdefault(name, {})
        return self._restricted(judged | extra, qrels_by_split)

    slice = subset

    def _restricted(self, keep_docs: set[str], qrels_by_split: dict[str, Qrels]) -> "BeirDataset":
        corpus = {doc_id: doc for doc_id, doc in self.corpus.items() if doc_id in keep_docs}
        new_qrels: dict[str, Qrels] = {}
        for name, qrels in qrels_by_split.items():
            kept: Qrels = {}
            for query_id, docs in qrels.items():
                docs = {doc: score for doc, score in docs.items() if doc in corpus}
                if docs:
                    kept[query_id] = docs
            new_qrels[name] = kept
        judged_queries = {q for qrels in new_qrels.values() for q in qrels}
        queries = {q: text for q, text in self.queries.items() if q in judged_queries}
        return BeirDataset(corpus=corpus, queries=queries, qrels_by_split=new_qrels, name=self.name, directory=self.directory)

    # ------------------------------------------------------------------ export
    def write_corpus_files(self, directory: str | Path, doc_ids: Iterable[str] | None = None) -> int:
        """Write each document as ``<directory>/<doc_id>.json`` (``{"_id", "title", "text"}``) so
        the local-file loader can fetch the items that simulated sessions point at. Returns the
        number of files written. Ids that are not safe file names are refused (``ValueError``)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        count = 0
        for doc_id in doc_ids if doc_ids is not None else self.corpus:
            if _unsafe_file_name(doc_id):
                raise ValueError(f"document id {doc_id!r} is not a safe file name")
            doc = self.corpus[doc_id]
            payload = {"_id": doc_id, "title": doc.get("title", ""), "text": doc.get("text", "")}
            (directory / f"{doc_id}.json").write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
            count += 1
        return count
