"""``GET /v1/schedule``: the continuous-operation policy, its last firing and the open batch."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from worker.api.auth import Scope, require
from worker.api.errors import ERROR_RESPONSES
from worker.api.services import Services, services
from worker.scheduler import Scheduler, ScheduleView

router = APIRouter(tags=["schedule"], dependencies=[require(Scope.tasks)], responses=ERROR_RESPONSES)


@router.get("/v1/schedule", response_model=ScheduleView)
def schedule(svc: Services = Depends(services)) -> ScheduleView:
    """What the scheduler is configured to do, what it did last, and whether it would fire now."""
    return Scheduler(svc.settings, db=svc.db, clickstream=svc.clickstream).view()
