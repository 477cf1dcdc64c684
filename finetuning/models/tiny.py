"""A tiny random BERT text model built in-process, for fast tests (nothing downloaded).

``build_tiny_text_model(directory)`` writes a sentence-transformers directory (a random
``BertModel`` from a small ``BertConfig``, a WordPiece vocabulary made from a word list plus
single characters so any lower-cased text tokenizes without ``[UNK]``, mean pooling,
L2-normalisation) that is also a clicktune model (``clicktune_model.json``, kind ``text``):

    >>> path = build_tiny_text_model(tmp_path / "tiny")                     # doctest: +SKIP
    >>> load_model(path).encode_queries(["hello"]).shape                    # doctest: +SKIP
    torch.Size([1, 32])
"""

from __future__ import annotations

import copy
import shutil
import string
import tempfile
from pathlib import Path
from typing import Iterable

import torch

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
DEFAULT_WORDS = (
    "the a an of to in and or is are was be for on with as by at from that this it not no "
    "what how why when where which who query search result item document model cell cells gene "
    "protein cancer risk disease patients study effect increase decrease treatment blood high low "
    "red blue green cat dog car house water fire food apple banana music sport news science"
).split()


def build_tiny_text_model(
    directory: str | Path,
    dim: int = 32,
    layers: int = 2,
    words: Iterable[str] = (),
    max_seq_length: int = 64,
    seed: int = 0,
    same_query_and_items: bool = True,
) -> Path:
    """Write a tiny random text model to ``directory`` and return the path."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import BertConfig, BertModel, BertTokenizer

    from finetuning.models.text import TextEmbeddingsModel

    directory = Path(directory)
    vocab: list[str] = list(SPECIAL_TOKENS)
    seen = set(vocab)
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    for token in [*DEFAULT_WORDS, *(w.lower() for w in words), *chars, *(f"##{c}" for c in chars)]:
        if token and token not in seen:
            seen.add(token)
            vocab.append(token)

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=dim,
        num_hidden_layers=layers,
        num_attention_heads=max(1, dim // 16),
        intermediate_size=dim * 2,
        max_position_embeddings=max(128, max_seq_length),
    )
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = Path(tmp) / "hf"
        hf_dir.mkdir()
        (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tokenizer = BertTokenizer(vocab=str(hf_dir / "vocab.txt"), do_lower_case=True)
        tokenizer.save_pretrained(str(hf_dir))
        BertModel(config).save_pretrained(str(hf_dir))
        transformer = Transformer(str(hf_dir), max_seq_length=max_seq_length)
        st = SentenceTransformer(modules=[transformer, Pooling(dim, "mean"), Normalize()], device="cpu")
        items = None if same_query_and_items else copy.deepcopy(st)
        if directory.exists():
            shutil.rmtree(directory)
        TextEmbeddingsModel(st, items).save(directory)
    return directory


def build_tiny_clip_model(directory: str | Path, dim: int = 32, layers: int = 2, image_size: int = 16, seed: int = 0) -> Path:
    """Write a tiny random CLIP (BERT-WordPiece tokenizer, ``image_size`` px ViT) to ``directory``."""
    from transformers import BertTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    from finetuning.models.clip import ClipEmbeddingsModel

    directory = Path(directory)
    vocab: list[str] = list(SPECIAL_TOKENS)
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    for token in [*DEFAULT_WORDS, *chars, *(f"##{c}" for c in chars)]:
        if token not in vocab:
            vocab.append(token)
    torch.manual_seed(seed)
    common = dict(hidden_size=dim, intermediate_size=dim * 2, num_hidden_layers=layers, num_attention_heads=max(1, dim // 16))
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=64, eos_token_id=vocab.index("[SEP]"),
                         pad_token_id=0, bos_token_id=vocab.index("[CLS]"), **common),
        vision_config=dict(image_size=image_size, patch_size=max(2, image_size // 4), num_channels=3, **common),
        projection_dim=dim,
    )
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tokenizer = BertTokenizer(vocab=str(Path(tmp) / "vocab.txt"), do_lower_case=True)
        processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
        model = ClipEmbeddingsModel(CLIPModel(config), tokenizer, processor, max_text_length=64)
        if directory.exists():
            shutil.rmtree(directory)
        model.save(directory)
    return directory
