"""``POST /v1/search``: embed a query with the blue model, return the top k of the blue collection."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from worker.api.auth import Scope, require
from worker.api.errors import ERROR_RESPONSES, NOT_FOUND, UNAVAILABLE
from worker.api.services import Services, services
from worker.search import NoBlueDeployment, SearchRequest, SearchResponse
from worker.vector_store import CollectionNotFound

router = APIRouter(tags=["search"], dependencies=[require(Scope.search)], responses=ERROR_RESPONSES)


@router.post("/v1/search", response_model=SearchResponse, responses={**NOT_FOUND, **UNAVAILABLE})
def search(request: SearchRequest, svc: Services = Depends(services)) -> SearchResponse:
    """The ``k`` items nearest to ``query`` in the deployment's blue collection (best first).
    404 when the deployment has no blue collection yet."""
    try:
        return svc.searcher.search(request)
    except NoBlueDeployment as exc:
        raise HTTPException(404, str(exc)) from None
    except CollectionNotFound as exc:
        raise HTTPException(503, f"the blue collection is not in the vector store: {exc}") from None
