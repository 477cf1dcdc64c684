"""Secret-free text: the redactor for anything that may reach a log, a task document or MLflow.

Removes known secret values (settings given as ``SecretStr`` or strings), the user-info part of
URLs (``scheme://user:password@host`` → ``scheme://***@host``) and ``password=…``-style pairs.
"""

from __future__ import annotations

import re
from typing import Iterable

from pydantic import SecretStr

_URL_CREDENTIALS = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@]+@")
_KEY_VALUE = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)(\s*[=:]\s*)([^\s,;&'\"]+)")


def redact(text: str, secrets: Iterable[SecretStr | str | None] = ()) -> str:
    """``text`` without credentials: known secret values, ``user:pass@`` in URLs and ``password=…`` pairs."""
    for secret in secrets:
        raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if raw and len(raw) >= 4:
            text = text.replace(raw, "***")
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    return _KEY_VALUE.sub(r"\1\2***", text)
