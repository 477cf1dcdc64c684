"""Bytes → item data: text, JSON, PIL image, or raw bytes.

``kind="auto"`` decides by the name's extension: ``.json`` → ``dict``/``list``, image extensions →
``PIL.Image``, anything else → text. Undecodable bytes raise :class:`ItemProblem` (a permanent per-item
failure), never a crash of the whole load.
"""

from __future__ import annotations

import io
import json
from pathlib import PurePosixPath
from typing import Any, Literal

from loaders.errors import ItemProblem

DataKind = Literal["auto", "text", "json", "image", "bytes"]
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})


def kind_for_name(name: str) -> DataKind:
    suffix = PurePosixPath(name).suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return "text"


def decode_text(data: bytes, encoding: str = "utf-8") -> str:
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise ItemProblem(f"not valid {encoding} text: {exc.reason if hasattr(exc, 'reason') else exc}") from None


def decode_json(data: bytes, encoding: str = "utf-8") -> Any:
    try:
        return json.loads(decode_text(data, encoding))
    except json.JSONDecodeError as exc:
        raise ItemProblem(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ItemProblem("not valid JSON: nested too deeply for the decoder") from None
    except ValueError as exc:  # e.g. an integer literal past the interpreter's digit limit
        raise ItemProblem(f"not valid JSON: {str(exc)[:120]}") from None


def decode_image(data: bytes, mode: str | None = None):
    """A fully decoded ``PIL.Image`` (``load()`` is called so broken files fail here, not later)."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ItemProblem(f"not a decodable image: {exc}") from None
    return image.convert(mode) if mode and image.mode != mode else image


def decode(data: bytes, kind: DataKind, name: str = "", encoding: str = "utf-8", image_mode: str | None = None) -> Any:
    """Decode ``data`` as ``kind`` (``auto`` looks at ``name``'s extension)."""
    if kind == "auto":
        kind = kind_for_name(name)
    if kind == "bytes":
        return data
    if kind == "text":
        return decode_text(data, encoding)
    if kind == "json":
        return decode_json(data, encoding)
    if kind == "image":
        return decode_image(data, image_mode)
    raise ValueError(f"unknown data kind {kind!r}")
