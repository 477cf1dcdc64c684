"""Write the small SciFact slice bundled in examples/scifact-slice (used by the demo when
../shared/data/scifact is absent). Reproducible: python scripts/make_scifact_slice.py SRC DST"""

import json
import sys
from pathlib import Path

from finetuning.datasets.beir import BeirDataset


def main(src: str, dst: str, train_queries: int = 120, test_queries: int = 50, extra_docs: int = 200) -> None:
    full = BeirDataset.load(src)
    train = full.subset(train_queries, split="train", seed=7)
    test = full.subset(test_queries, split="test", seed=7)
    docs = set(train.corpus) | set(test.corpus)
    others = sorted(d for d in full.corpus if d not in docs)
    import random

    docs |= set(random.Random(7).sample(others, extra_docs))
    out = Path(dst)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w") as handle:
        for doc_id in sorted(docs, key=lambda d: int(d) if d.isdigit() else d):
            row = full.corpus[doc_id]
            handle.write(json.dumps({"_id": doc_id, "title": row["title"], "text": row["text"]}) + "\n")
    queries = {**{q: full.queries[q] for q in train.query_ids("train")}, **{q: full.queries[q] for q in test.query_ids("test")}}
    with open(out / "queries.jsonl", "w") as handle:
        for qid, text in queries.items():
            handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for split, part in (("train", train), ("test", test)):
        with open(out / "qrels" / f"{split}.tsv", "w") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            for qid, docs_of in part.qrels(split).items():
                for doc_id, score in docs_of.items():
                    handle.write(f"{qid}\t{doc_id}\t{score}\n")
    print(f"{len(docs)} docs, {len(train.query_ids('train'))} train and {len(test.query_ids('test'))} test queries")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
