"""Training inputs: sessions, their conversion from clickstream dicts, items, splitting, augmentation."""

from finetuning.inputs.converter import session_to_input, sessions_to_inputs
from finetuning.inputs.fields import FieldsNormalizer
from finetuning.inputs.input import ClickEvent, FineTuningInput
from finetuning.inputs.items_set import ItemsSet
from finetuning.inputs.query_retriever import QueryRetriever, TextQueryRetriever
from finetuning.inputs.splitter import TrainTestSplitter
from finetuning.inputs.text_splitter import TextSplitter

__all__ = [
    "ClickEvent",
    "FieldsNormalizer",
    "FineTuningInput",
    "ItemsSet",
    "QueryRetriever",
    "TextQueryRetriever",
    "TextSplitter",
    "TrainTestSplitter",
    "session_to_input",
    "sessions_to_inputs",
]
