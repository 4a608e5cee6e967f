"""``/v1/compare``: two analyses of one architecture, layer by layer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service import store
from service.openapi import errors
from service.routes.deps import ReadKey, SessionDep
from service.schemas_series import ComparisonPublic

router = APIRouter(prefix="/compare", tags=["compare"])
AnalysisId = Annotated[str, Query(pattern="^[0-9a-f]{32}$")]


@router.get("", responses=errors(404, 409))
def compare(
    a: AnalysisId, b: AnalysisId, key: ReadKey, session: SessionDep
) -> ComparisonPublic:
    """Per layer and metric in both: b - a, the relative change, whether the
    intervals overlap; bottlenecks added and lost. 422 names what does not match."""
    return store.compare_analyses(session, key.team_id, a, b)
