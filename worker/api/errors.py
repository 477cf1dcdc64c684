"""Every error is a JSON body ``{"error": <code>, "message": <text>, "details": [...]}``.

``error`` is a stable machine-readable code (``not_found``, ``invalid_request``, ``unauthorized``
…), ``message`` says what went wrong in words, ``details`` (optional) lists per-field problems or
rejected records. :data:`ERROR_RESPONSES` documents the shared error statuses in the OpenAPI spec.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request",
          503: "unavailable", 500: "internal_error"}


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str = Field(description="Stable error code, e.g. not_found, invalid_request, forbidden.")
    message: str = Field(description="What went wrong, in words.")
    details: list[Any] | None = Field(None, description="Per-field problems or rejected records, when any.")


def error_code(status: int) -> str:
    return _CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_")


def error_response(status: int, message: str, details: list[Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=error_code(status), message=message, details=details)
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers)


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": HTTPStatus(status).phrase} for status in statuses}


#: Errors any authenticated endpoint may answer with.
ERROR_RESPONSES = _documented(401, 403, 413, 422)
NOT_FOUND = _documented(404)
CONFLICT = _documented(409)
UNAVAILABLE = _documented(503)


def install_error_handlers(app: FastAPI) -> None:
    """JSON bodies for HTTP errors, request validation errors and unexpected exceptions."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":  # no route matched
            detail = f"no such path: {request.url.path} (endpoints are under /v1; see /openapi.json)"
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"{request.method} is not allowed on {request.url.path}"
        if isinstance(detail, dict):
            return error_response(exc.status_code, str(detail.get("message")), detail.get("details"),
                                  headers=getattr(exc, "headers", None))
        return error_response(exc.status_code, str(detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": [str(p) for p in error.get("loc", ())], "msg": str(error.get("msg", ""))}
                   for error in exc.errors()[:20]]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"]) or "request"
        return error_response(422, f"invalid request: {where}: {first['msg']}", details)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the service log")
