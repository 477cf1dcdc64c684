"""Retrieval data sets with relevance judgements (BEIR layout), used to simulate clickstream and
to evaluate retrieval quality."""

from finetuning.datasets.beir import BeirDataset, Qrels

__all__ = ["BeirDataset", "Qrels"]
