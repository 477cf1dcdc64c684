"""Logging of clicktune processes: the task on every line, text or JSON, no secrets, no third-party noise.

- :func:`task_log_context` marks the code that runs one task (the lifecycle wraps each job in it):
  every record logged inside it, by any logger, carries ``task_id`` and ``task_kind`` — a context
  variable read by a logging filter, so no call site formats the id itself. Threads a job starts
  carry it when they run under ``contextvars.copy_context().run``.
- :func:`configure_logging` (called once when a worker process starts) installs, on the root logger
  and on every root handler (so records of third-party loggers are covered too):

  * :class:`TaskContextFilter` — adds ``task_id`` / ``task_kind`` (``None`` outside a task);
  * :class:`RedactingFilter` — removes ``user:password@`` from URLs, ``password=…`` pairs and the
    values of every secret setting (Mongo, Redis, MLflow, Chroma, AWS, PostgreSQL);
  * a formatter: text (``[time] [PID] [thread] [logger] [LEVEL] [kind task_id] message``) or, with
    ``CLICKTUNE_LOG_FORMAT=json``, one JSON object per line. Both strip terminal colour codes.

  It also routes MLflow's and Lightning's own loggers through the root handlers, silences their
  chatter (Lightning tips and device lines, MLflow's run-URL prints) and known deprecation warnings,
  and wraps ``sys.stdout`` / ``sys.stderr`` so that what third-party code prints is redacted as well.
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import os
import re
import sys
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterable, Iterator, TextIO
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

from loaders.errors import Redactor
from worker.settings import Settings, get_settings

_current_task: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "clicktune_task", default=None)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

TEXT_FORMAT = "[%(asctime)s] [PID %(process)d] [%(threadName)s] [%(name)s] [%(levelname)s] %(task)s%(message)s"

#: Loggers whose INFO lines are chatter in a worker (device summaries, tips, per-request lines).
QUIET_LOGGERS: dict[str, int] = {
    "lightning.pytorch.utilities.rank_zero": logging.WARNING,   # "GPU available …", "💡 Tip …"
    "lightning.fabric.utilities.rank_zero": logging.WARNING,
    "lightning.pytorch.accelerators.cuda": logging.WARNING,     # "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES"
    "pytorch_lightning.utilities.rank_zero": logging.WARNING,
    "sentence_transformers": logging.WARNING,                   # "Load pretrained SentenceTransformer …"
    "httpx": logging.WARNING,
    "urllib3": logging.WARNING,
    "alembic": logging.WARNING,
    "sqlalchemy.engine": logging.WARNING,
    "chromadb.telemetry": logging.ERROR,
}

#: Loggers that install handlers of their own (with colours, or bypassing the root handlers):
#: their handlers are removed so their records reach the root handlers, filtered and formatted.
ROUTED_LOGGERS = ("mlflow", "lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")

#: Warnings known to be harmless in this service (message regex, category).
KNOWN_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r".*does not have many workers which may be a bottleneck.*", UserWarning),
    (r".*The number of training batches .* is smaller than the logging interval.*", UserWarning),
    (r".*Checkpoint directory .* exists and is not empty.*", UserWarning),
    (r".*`resume_download` is deprecated.*", FutureWarning),
    (r".*pkg_resources is deprecated.*", UserWarning),
    (r".*Support for class-based `config` is deprecated.*", DeprecationWarning),
    (r".*datetime\.datetime\.utcnow\(\) is deprecated.*", DeprecationWarning),
    (r".*Hint: Inferred schema contains integer column.*", UserWarning),
    (r".*Any type hint is inferred as AnyType.*", UserWarning),
    (r".*Add type hints to the `predict` method.*", UserWarning),
    (r".*An input example was not provided.*", UserWarning),
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated.*", Warning),
)
IGNORED_WARNING_CATEGORIES: tuple[type[Warning], ...] = (DeprecationWarning, PendingDeprecationWarning)


# ---------------------------------------------------------------------------------------------
# Task context
# ---------------------------------------------------------------------------------------------

@contextmanager
def task_log_context(task_id: str, kind: str) -> Iterator[None]:
    """Every record logged inside this block (in this thread or context) names ``kind`` and ``task_id``."""
    token = _current_task.set((task_id, kind))
    try:
        yield
    finally:
        _current_task.reset(token)


def current_task() -> tuple[str, str] | None:
    """``(task_id, kind)`` of the task this code runs for, or ``None``."""
    return _current_task.get()


class TaskContextFilter(logging.Filter):
    """Adds ``task_id`` and ``task_kind`` to every record (``None`` outside a task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "task_id", None) is None:
            task = _current_task.get()
            record.task_id, record.task_kind = task if task else (None, None)
        return True


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------

def _url_password(url: str | None) -> list[str]:
    """The password of a URL (as written and decoded), if it has one."""
    if not url or "://" not in url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


def _raw(value: SecretStr | str | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def secret_values(settings: Settings | None = None) -> list[str]:
    """Every secret a process of the service knows: the connection URLs (and their passwords), the
    Chroma token, MLflow credentials, and the loaders' AWS keys and PostgreSQL DSN."""
    settings = settings or get_settings()
    values: list[str] = []
    for value in (settings.mongo_url, settings.redis_url, settings.chroma_auth_token):
        raw = _raw(value)
        if raw:
            values += [raw, *_url_password(raw)]
    values += _url_password(settings.mlflow_tracking_uri)
    values += [os.environ[name] for name in ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
               if os.environ.get(name)]
    try:
        from loaders.settings import LoaderSettings

        values += LoaderSettings().secret_values()
    except Exception:  # unreadable loader settings: the loaders report that themselves
        pass
    # URL-shaped secrets without a password (plain hosts) are not secret enough to hide: keep the
    # ones that carry credentials or are not URLs at all.
    return sorted({v for v in values if v and (("://" not in v) or "@" in v)}, key=len, reverse=True)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with credentials removed (see :class:`loaders.errors.Redactor`)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        self._redactor = Redactor(secrets)

    def redact(self, text: str) -> str:
        return self._redactor(text)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_clicktune_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        record._clicktune_redacted = True
        return True


class RedactingStream(io.TextIOBase):
    """A text stream that redacts what is written to it, then writes it to ``target``.

    Each ``write`` call is redacted on its own (print and ``sys.stdout.write`` pass whole lines)."""

    def __init__(self, target: TextIO, redactor: RedactingFilter) -> None:
        self.target, self.redactor = target, redactor

    def write(self, text: str) -> int:
        self.target.write(self.redactor.redact(text))
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    def __getattr__(self, name: str):
        return getattr(self.target, name)


# ---------------------------------------------------------------------------------------------
# Formatters
# ---------------------------------------------------------------------------------------------

class TextFormatter(logging.Formatter):
    """Dramatiq's line format plus ``[kind task_id]`` inside a task; colour codes stripped, redacted."""

    def __init__(self, redactor: RedactingFilter | None = None) -> None:
        super().__init__(TEXT_FORMAT)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        task_id = getattr(record, "task_id", None)
        record.task = f"[{getattr(record, 'task_kind', None)} {task_id}] " if task_id else ""
        text = _ANSI.sub("", super().format(record))
        return self.redactor.redact(text) if self.redactor else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, thread, task_id, task_kind, exc."""

    def __init__(self, redactor: RedactingFilter | None = None) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        clean = self.redactor.redact if self.redactor else (lambda text: text)
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": clean(_ANSI.sub("", record.getMessage())),
            "pid": record.process,
            "thread": record.threadName,
            "task_id": getattr(record, "task_id", None),
            "task_kind": getattr(record, "task_kind", None),
        }
        if record.exc_info:
            entry["exc"] = clean(_ANSI.sub("", self.formatException(record.exc_info)))
        elif record.exc_text:
            entry["exc"] = clean(record.exc_text)
        return json.dumps(entry, ensure_ascii=False, default=str)


def make_formatter(fmt: str, redactor: RedactingFilter | None = None) -> logging.Formatter:
    """``"text"`` or ``"json"``."""
    if fmt == "json":
        return JsonFormatter(redactor)
    if fmt == "text":
        return TextFormatter(redactor)
    raise ValueError(f"unknown log format {fmt!r}: expected 'text' or 'json'")


# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------

def silence_third_party() -> None:
    """Quiet the libraries' chatter at its source: logger levels, their own handlers, warnings filters."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "🏃 View run … at: URL"
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # no coloured handler of its own
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in a log:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars
    os.environ.setdefault("TQDM_DISABLE", "1")  # any other tqdm bar
    for name in ROUTED_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler):
                logger.removeHandler(handler)
        logger.propagate = True
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for category in IGNORED_WARNING_CATEGORIES:
        warnings.filterwarnings("ignore", category=category)
    logging.captureWarnings(True)  # the rest go through logging: tagged with the task, redacted
    py_warnings = logging.getLogger("py.warnings")
    if _has(py_warnings.filters, KnownWarningsFilter) is None:
        py_warnings.addFilter(KnownWarningsFilter())


class KnownWarningsFilter(logging.Filter):
    """Drops captured warnings (logger ``py.warnings``) that match :data:`KNOWN_WARNINGS`.

    Needed beside ``warnings.filterwarnings``: some libraries wrap their calls in
    ``catch_warnings(); simplefilter("once")``, which puts their own filter in front of ours."""

    def __init__(self) -> None:
        super().__init__()
        self._patterns = [(re.compile(message, re.I | re.S), category) for message, category in KNOWN_WARNINGS]

    def filter(self, record: logging.LogRecord) -> bool:
        text = _ANSI.sub("", record.getMessage())
        return not any(category.__name__ in text and pattern.search(text) for pattern, category in self._patterns)


def _has(filters: list, kind: type) -> logging.Filter | None:
    return next((f for f in filters if isinstance(f, kind)), None)


def configure_logging(settings: Settings | None = None, *, fmt: str | None = None,
                      wrap_streams: bool = True) -> RedactingFilter:
    """Set up this process's logging as described in the module docstring; safe to call again.

    ``fmt`` defaults to ``settings.log_format`` (``CLICKTUNE_LOG_FORMAT``). Returns the redacting
    filter in use (its ``redact`` method cleans any text)."""
    settings = settings or get_settings()
    fmt = fmt or settings.log_format
    root = logging.getLogger()
    redactor = _has(root.filters, RedactingFilter)
    if redactor is None:
        redactor = RedactingFilter(secret_values(settings))
        root.addFilter(redactor)
    else:
        redactor.set_secrets(secret_values(settings))
    if _has(root.filters, TaskContextFilter) is None:
        root.addFilter(TaskContextFilter())
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
        root.setLevel(logging.INFO)
    formatter = make_formatter(fmt, redactor)
    for handler in root.handlers:
        # Filters on the handlers: records of other loggers propagate to these handlers without
        # passing the root logger's own filters.
        if _has(handler.filters, TaskContextFilter) is None:
            handler.addFilter(TaskContextFilter())
        if _has(handler.filters, RedactingFilter) is None:
            handler.addFilter(redactor)
        if type(handler) in (logging.StreamHandler, logging.FileHandler):  # not test-capture handlers
            handler.setFormatter(formatter)
    silence_third_party()
    if wrap_streams:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, RedactingStream):
                setattr(sys, name, RedactingStream(stream, redactor))
    return redactor
