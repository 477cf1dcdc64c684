"""The app factory of ``clicktune api``: routers per area, auth, JSON errors, body limit, metrics.

    app = create_app(Settings())     # connects to nothing until a request needs it
    uvicorn.run(app, host=..., port=...)

Paths are versioned (``/v1/…``); the OpenAPI document is at ``/openapi.json`` (and printed by
``clicktune api --openapi``), interactive docs at ``/docs``. ``/metrics`` is the Prometheus
exposition (not versioned: it is the scrapers' convention).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from worker.api import clickstream_routes, health_routes, schedule_routes, search_routes, tasks_routes
from worker.api.auth import API_KEY_HEADER, Scope
from worker.api.errors import error_response, install_error_handlers
from worker.api.limits import BodySizeLimit
from worker.api.request_metrics import RequestMetrics
from worker.api.services import Services
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"

DESCRIPTION = f"""HTTP API of clicktune: a search service sends its sessions and clicks, starts and follows
fine-tuning and reindex tasks, and queries the blue collection.

Authenticate with an API key in the `{API_KEY_HEADER}` header. Scopes: `ingest` (clickstream),
`tasks` (tasks, blue pointer, schedule), `search`, `admin` (all). Errors are JSON:
`{{"error": <code>, "message": <text>, "details": [...]}}`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    services = Services(settings)
    app = FastAPI(title="clicktune", version=API_VERSION, description=DESCRIPTION,
                  openapi_tags=[{"name": "clickstream"}, {"name": "tasks"}, {"name": "search"},
                                {"name": "schedule"}, {"name": "health"}])
    app.state.services = services
    install_error_handlers(app)
    for module in (clickstream_routes, tasks_routes, search_routes, schedule_routes, health_routes):
        app.include_router(module.router)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        if not settings.api_metrics_public:
            key = request.headers.get(API_KEY_HEADER)
            record = services.keys.lookup(key) if key else None
            if record is None or not record.allows(Scope.admin):
                return error_response(401 if record is None else 403, "metrics need a key with scope 'admin'")
        return Response(services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    # outermost first: metrics see every request, including those refused for their size
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=services.metrics)
    return app
