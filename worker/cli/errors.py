"""How the ``clicktune`` command line reports a service it cannot reach: one line, no traceback.

Every command runs inside :class:`ClicktuneGroup` (the click group of the Typer app). When a command
fails because MongoDB, Redis or the MLflow tracking server does not answer, the user sees one line
naming the service, the setting to check and its (redacted) value, e.g.::

    error: cannot reach MongoDB at CLICKTUNE_MONGO_URL (mongodb://***@db:27017): connection refused

and the command exits with :data:`EXIT_UNREACHABLE`. Other errors are not hidden: they propagate as
before (without local variables in the traceback, which could hold connection strings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import click
import typer
from typer.core import TyperGroup

#: Exit status of a command that could not reach a service (1 = not found / not allowed, 2 = invalid input).
EXIT_UNREACHABLE = 3


@dataclass(frozen=True)
class Unreachable:
    """Which service, through which setting, at which (redacted) address, and why."""

    service: str
    setting: str
    address: str
    reason: str

    def __str__(self) -> str:
        return f"cannot reach {self.service} at {self.setting} ({self.address}): {self.reason}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes / contexts, each once."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()).lower()
    for needle, reason in (("refused", "connection refused"), ("timed out", "timed out"), ("timeout", "timed out"),
                           ("name or service not known", "unknown host"), ("nodename nor servname", "unknown host"),
                           ("authentication", "authentication failed"), ("auth", "authentication failed"),
                           ("max retries exceeded", "no answer")):
        if needle in text:
            return reason
    return type(exc).__name__


def _redacted(url: Any) -> str:
    from loaders.errors import Redactor

    raw = url.get_secret_value() if hasattr(url, "get_secret_value") else str(url)
    return Redactor()(raw)


def unreachable_service(exc: BaseException, settings: Any | None = None) -> Unreachable | None:
    """The :class:`Unreachable` that explains ``exc`` (anywhere in its cause chain), or ``None``."""
    if settings is None:
        from worker.settings import get_settings

        settings = get_settings()
    for error in _chain(exc):
        module = type(error).__module__ or ""
        if module.startswith("pymongo"):
            from pymongo.errors import ConnectionFailure, OperationFailure

            if isinstance(error, ConnectionFailure) or (isinstance(error, OperationFailure) and error.code == 18):
                return Unreachable("MongoDB", "CLICKTUNE_MONGO_URL", _redacted(settings.mongo_url), _reason(error))
        if module.startswith("redis"):
            from redis.exceptions import AuthenticationError, ConnectionError, TimeoutError

            if isinstance(error, (ConnectionError, TimeoutError, AuthenticationError)):
                reason = "authentication failed" if isinstance(error, AuthenticationError) else _reason(error)
                return Unreachable("Redis", "CLICKTUNE_REDIS_URL", _redacted(settings.redis_url), reason)
        if type(error).__name__ == "TrackingUnavailable":  # finetuning.experiments: MLflow after bounded retries
            return Unreachable("the MLflow tracking server", "CLICKTUNE_MLFLOW_TRACKING_URI",
                               _redacted(settings.mlflow_tracking_uri), _reason(error.__cause__ or error))
        if module.startswith(("mlflow", "requests", "urllib3")):
            text = str(error)
            if "API request to" in text or "Max retries exceeded" in text or "Connection refused" in text:
                return Unreachable("the MLflow tracking server", "CLICKTUNE_MLFLOW_TRACKING_URI",
                                   _redacted(settings.mlflow_tracking_uri), _reason(error))
    return None


class ClicktuneGroup(TyperGroup):
    """The Typer group of ``clicktune``: a command that cannot reach a service ends with one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:
            try:
                problem = unreachable_service(exc)
            except Exception:  # the settings themselves are unreadable: show the original error
                problem = None
            if problem is None:
                raise
            typer.echo(f"error: {problem}", err=True)
            raise typer.Exit(EXIT_UNREACHABLE) from None


def new_app(**kwargs: Any) -> typer.Typer:
    """A Typer app with :class:`ClicktuneGroup` and tracebacks without local variables."""
    return typer.Typer(cls=ClicktuneGroup, pretty_exceptions_show_locals=False, **kwargs)
