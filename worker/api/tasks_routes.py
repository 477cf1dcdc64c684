"""``/v1/tasks`` and ``/v1/blue``: enqueue fine-tuning and reindex tasks, follow, list, cancel and
restart them, and read the blue pointer — through :class:`~worker.client.ClicktuneClient`, as the CLI."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status

from dao.blue_pointer import BluePointer
from dao.task_documents import TASK_KINDS, FineTuningRequest, ReindexRequest, TaskStatus
from dao.tasks import TaskStateError
from worker.api.auth import Scope, require
from worker.api.errors import CONFLICT, ERROR_RESPONSES, NOT_FOUND
from worker.api.schemas import TaskCreated, TaskView
from worker.api.services import Services, services

router = APIRouter(tags=["tasks"], dependencies=[require(Scope.tasks)], responses=ERROR_RESPONSES)

TaskId = Path(min_length=1, max_length=200)


def _enqueue(svc: Services, kind: str, request) -> TaskCreated:
    from worker.client import InvalidRequest

    try:
        task_id = svc.client.enqueue(kind, request)
    except InvalidRequest as exc:
        raise HTTPException(422, str(exc)) from None
    return TaskCreated(task_id=task_id, kind=kind)


@router.post("/v1/tasks/fine-tuning", response_model=TaskCreated, status_code=status.HTTP_202_ACCEPTED)
def enqueue_fine_tuning(request: FineTuningRequest, svc: Services = Depends(services)) -> TaskCreated:
    """Enqueue a fine-tuning task. The same ``idempotency_key`` always names the same task."""
    return _enqueue(svc, "fine_tuning", request)


@router.post("/v1/tasks/reindex", response_model=TaskCreated, status_code=status.HTTP_202_ACCEPTED)
def enqueue_reindex(request: ReindexRequest, svc: Services = Depends(services)) -> TaskCreated:
    """Enqueue a reindex: re-embed the blue collection with ``dest_run_id``'s model, then switch blue."""
    return _enqueue(svc, "reindex", request)


@router.get("/v1/tasks", response_model=list[TaskView])
def list_tasks(kind: str | None = Query(None, description=f"One of {sorted(TASK_KINDS)}."),
               status_: list[TaskStatus] | None = Query(None, alias="status"),
               limit: int = Query(50, ge=1, le=1000),
               svc: Services = Depends(services)) -> list[TaskView]:
    """Tasks, newest first (optionally of one kind, in the given statuses)."""
    if kind is not None and kind not in TASK_KINDS:
        raise HTTPException(422, f"unknown kind {kind!r}; known: {sorted(TASK_KINDS)}")
    return [TaskView.of(task) for task in svc.client.list_tasks(kind=kind, status=status_ or None, limit=limit)]


@router.get("/v1/tasks/{task_id}", response_model=TaskView, responses=NOT_FOUND)
def get_task(task_id: str = TaskId, svc: Services = Depends(services)) -> TaskView:
    """A task's status, progress, detail and result."""
    from worker.client import TaskNotFound

    try:
        return TaskView.of(svc.client.status(task_id))
    except TaskNotFound:
        raise HTTPException(404, f"no task {task_id!r}") from None


@router.post("/v1/tasks/{task_id}/cancel", response_model=TaskView, responses=NOT_FOUND)
def cancel_task(task_id: str = TaskId, svc: Services = Depends(services)) -> TaskView:
    """Pending → canceled now; running → the job stops within one heartbeat (``cancel_requested``)."""
    from worker.client import TaskNotFound

    try:
        return TaskView.of(svc.client.cancel(task_id))
    except TaskNotFound:
        raise HTTPException(404, f"no task {task_id!r}") from None


@router.post("/v1/tasks/{task_id}/restart", response_model=TaskCreated, status_code=status.HTTP_202_ACCEPTED,
             responses={**NOT_FOUND, **CONFLICT})
def restart_task(task_id: str = TaskId, svc: Services = Depends(services)) -> TaskCreated:
    """A new attempt of a finished task (idempotent: restarting it again returns the same new task).
    409 while the task has not finished."""
    from worker.client import TaskNotFound

    try:
        kind = svc.client.find(task_id)[0]
        return TaskCreated(task_id=svc.client.restart(task_id, kind), kind=kind)
    except TaskNotFound:
        raise HTTPException(404, f"no task {task_id!r}") from None
    except TaskStateError as exc:
        raise HTTPException(409, str(exc)) from None


@router.get("/v1/blue", response_model=list[BluePointer])
def list_blue(svc: Services = Depends(services)) -> list[BluePointer]:
    """Every deployment's blue pointer: the collection and model that serve queries now."""
    return svc.pointers.list()


@router.get("/v1/blue/{deployment}", response_model=BluePointer, responses=NOT_FOUND)
def get_blue(deployment: str = Path(min_length=1, max_length=200), svc: Services = Depends(services)) -> BluePointer:
    pointer = svc.pointers.get(deployment)
    if pointer is None:
        raise HTTPException(404, f"deployment {deployment!r} has no blue collection yet")
    return pointer
