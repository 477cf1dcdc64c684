"""``/v1/clickstream``: sessions, events, the irrelevant flag, releasing and listing batches.

Every write goes through :class:`~dao.clickstream.ClickstreamDAO` — the importer's validation and
idempotency: a record already stored is a duplicate, not an error; a bad record comes back in
``rejected`` with its 0-based index in the request and the reason.
"""

from __future__ import annotations

from bson.errors import InvalidDocument
from fastapi import APIRouter, Depends, HTTPException, Path, Response, status

from pymongo.errors import DocumentTooLarge

from dao.clickstream_documents import ClickstreamBatch, ClickstreamSession, EventRecord, SessionRecord
from worker.api.auth import Scope, require
from worker.api.errors import CONFLICT, ERROR_RESPONSES, NOT_FOUND
from worker.api.schemas import BulkEvents, BulkRecords, IngestResult, IrrelevantFlag, ReleaseRequest
from worker.api.services import Services, services

router = APIRouter(prefix="/v1/clickstream", tags=["clickstream"], dependencies=[require(Scope.ingest)],
                   responses=ERROR_RESPONSES)

SessionId = Path(min_length=1, max_length=512)
ALREADY_STORED = {200: {"model": IngestResult, "description": "Already stored (an idempotent replay)."}}


def _ingest(svc: Services, records: list) -> IngestResult:
    try:
        report = svc.clickstream.ingest(records)
    except (InvalidDocument, DocumentTooLarge, OverflowError) as exc:
        # a value MongoDB cannot encode (an int over 64 bits, a NUL in a key …) that validation let through
        raise HTTPException(422, f"a record cannot be stored in MongoDB ({type(exc).__name__}: {str(exc)[:200]})") from None
    svc.metrics.observe_ingest(report)
    return IngestResult.of(report)


@router.post("/sessions", response_model=IngestResult, status_code=status.HTTP_201_CREATED, responses=ALREADY_STORED)
def create_session(session: SessionRecord, response: Response, svc: Services = Depends(services)) -> IngestResult:
    """Store one search session with its shown results (and, optionally, nested events).

    201 when stored, 200 when this ``session_id`` was already stored (idempotent). A nested event
    that is refused (e.g. its object was not shown) is listed in ``rejected``; the session stays.
    """
    result = _ingest(svc, [session])
    if result.rejected and not result.accepted_sessions and not result.duplicate_sessions:
        raise HTTPException(422, {"message": f"session rejected: {result.rejected[0].reason}",
                                  "details": [r.model_dump() for r in result.rejected]})
    if not result.accepted_sessions:
        response.status_code = status.HTTP_200_OK
    return result


@router.get("/sessions/{session_id}", response_model=ClickstreamSession, responses=NOT_FOUND)
def get_session(session_id: str = SessionId, svc: Services = Depends(services)) -> ClickstreamSession:
    """A stored session with its events (oldest first)."""
    session = svc.clickstream.get_session(session_id)
    if session is None:
        raise HTTPException(404, f"no session {session_id!r}")
    return session


@router.post("/sessions/{session_id}/events", response_model=IngestResult, status_code=status.HTTP_201_CREATED,
             responses={**NOT_FOUND, **ALREADY_STORED})
def add_event(event: EventRecord, response: Response, session_id: str = SessionId,
              svc: Services = Depends(services)) -> IngestResult:
    """Add one event to a stored session (idempotent per ``event_id``: 200 when already stored)."""
    if event.session_id is not None and event.session_id != session_id:
        raise HTTPException(422, f"event session_id {event.session_id!r} differs from the path's {session_id!r}")
    result = _ingest(svc, [event.model_copy(update={"session_id": session_id})])
    if result.rejected:
        reason = result.rejected[0].reason
        code = 404 if "unknown session" in reason else 422
        raise HTTPException(code, {"message": f"event rejected: {reason}",
                                   "details": [r.model_dump() for r in result.rejected]})
    if not result.accepted_events:
        response.status_code = status.HTTP_200_OK
    return result


@router.post("/events/bulk", response_model=IngestResult)
def add_events(body: BulkEvents, svc: Services = Depends(services)) -> IngestResult:
    """Add events of stored sessions; each bad one is listed in ``rejected`` with its index and reason."""
    return _ingest(svc, body.events)


@router.post("/records/bulk", response_model=IngestResult)
def add_records(body: BulkRecords, svc: Services = Depends(services)) -> IngestResult:
    """Store sessions and events in the JSONL import format (what ``clicktune clickstream import``
    reads), in order: an event may follow its session in the same request."""
    return _ingest(svc, body.records)


@router.put("/sessions/{session_id}/irrelevant", response_model=ClickstreamSession, responses=NOT_FOUND)
def mark_irrelevant(body: IrrelevantFlag, session_id: str = SessionId,
                    svc: Services = Depends(services)) -> ClickstreamSession:
    """Flag (or unflag) a session as irrelevant: the user found nothing useful in it."""
    if not svc.clickstream.mark_irrelevant(session_id, body.irrelevant):
        raise HTTPException(404, f"no session {session_id!r}")
    session = svc.clickstream.get_session(session_id)
    assert session is not None
    return session


@router.post("/release", response_model=ClickstreamBatch, responses=CONFLICT)
def release(body: ReleaseRequest, svc: Services = Depends(services)) -> ClickstreamBatch:
    """Release the open batch (idempotent per ``release_id``: the same id returns the same batch).
    409 when no batch is open."""
    batch = svc.clickstream.release(body.release_id)
    if batch is None:
        raise HTTPException(409, "no open batch to release (no session arrived since the last release)")
    return batch


@router.get("/batches", response_model=list[ClickstreamBatch])
def list_batches(svc: Services = Depends(services)) -> list[ClickstreamBatch]:
    """Every batch, oldest first."""
    return svc.clickstream.list_batches()


@router.get("/batches/{batch_id}", response_model=ClickstreamBatch, responses=NOT_FOUND)
def get_batch(batch_id: str = Path(min_length=1, max_length=200), svc: Services = Depends(services)) -> ClickstreamBatch:
    batch = svc.clickstream.get_batch(batch_id)
    if batch is None:
        raise HTTPException(404, f"no batch {batch_id!r}")
    return batch
