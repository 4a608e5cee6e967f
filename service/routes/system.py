"""``/v1/health`` and ``/v1/ready`` (no API key: for load balancers and probes)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service import store
from service.errors import Unavailable
from service.routes.deps import QueueDep, SessionDep
from service.schemas import Health, Readiness

router = APIRouter(tags=["system"])


_HEALTHY = Health()


@router.get("/health")
async def health() -> Health:
    """The process is up (no I/O, no thread: it answers while the database is busy)."""
    return _HEALTHY


@router.get("/ready")
async def ready(session: SessionDep, queue: QueueDep) -> Readiness:
    """The database and the task broker can both be reached (503 otherwise)."""
    state = Readiness(
        database=await run_in_threadpool(store.ping, session),
        broker=await run_in_threadpool(queue.ping),
    )
    if not (state.database and state.broker):
        down = [name for name, ok in state.model_dump().items() if not ok]
        raise Unavailable(f"not ready: cannot reach the {' and the '.join(down)}")
    return state
