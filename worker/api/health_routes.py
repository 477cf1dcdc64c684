"""``/v1/health/live`` (the process answers) and ``/v1/health/ready`` (Mongo and Redis answer and
the blue model loads; 503 otherwise, saying which check failed). No key needed."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from worker.api.schemas import Liveness, Readiness
from worker.api.services import Services, services

router = APIRouter(prefix="/v1/health", tags=["health"])


@router.get("/live", response_model=Liveness)
def live() -> Liveness:
    return Liveness()


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready"}})
def ready(svc: Services = Depends(services)):
    checks: dict[str, str] = {}
    try:
        svc.db.command("ping")
        checks["mongo"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report, do not fail the probe
        checks["mongo"] = f"unreachable ({type(exc).__name__})"
    try:
        svc.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"unreachable ({type(exc).__name__})"
    if checks["mongo"] == "ok":
        try:
            pointer = svc.searcher.ensure_ready()
            checks["blue_model"] = f"ok ({pointer.model_ref})" if pointer else "ok (no blue deployment yet)"
        except Exception as exc:  # noqa: BLE001
            checks["blue_model"] = f"does not load ({type(exc).__name__}: {str(exc)[:200]})"
    else:
        checks["blue_model"] = "not checked (mongo unreachable)"
    healthy = all(value.startswith("ok") for value in checks.values())
    body = Readiness(status="ok" if healthy else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
