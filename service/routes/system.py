"""``/v1/health`` and ``/v1/ready`` (no API key: for load balancers and probes)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service import store
from service.errors import Unavailable
from service.openapi import errors
from service.routes.deps import QueueDep, SessionDep, SettingsDep
from service.schemas import Health, Readiness

router = APIRouter(tags=["system"])
_HEALTHY = Health()
START_WORKER = (
    "start one with `celery -A workers.celery_app worker -Q gpu,cpu` "
    "(or run `bottlelens serve --embedded`)"
)


@router.get("/health")
async def health() -> Health:
    """The process is up (no I/O, no thread: it answers while the database is busy)."""
    return _HEALTHY


@router.get("/ready", responses=errors(503))
async def ready(
    session: SessionDep, queue: QueueDep, settings: SettingsDep
) -> Readiness:
    """The database and the broker answer and a worker sent a recent heartbeat."""
    timeout_s = settings.worker_heartbeat_timeout_s
    database, workers = await run_in_threadpool(
        _database_and_workers, session, timeout_s
    )
    state = Readiness(
        database=database,
        broker=await run_in_threadpool(queue.ping),
        workers=workers,
        heartbeat_timeout_s=timeout_s,
    )
    problems = [f"cannot reach the {part}" for part in ("database", "broker")
                if not getattr(state, part)]  # fmt: skip
    if state.database and not workers:
        problems.append(
            f"no worker has sent a heartbeat in the last {timeout_s:g} s; "
            + START_WORKER
        )
    if problems:
        raise Unavailable(
            "not ready: " + "; ".join(problems), code="not_ready", problems=problems
        )
    return state


def _database_and_workers(session: Session, timeout_s: float) -> tuple[bool, int]:
    if not store.ping(session):
        return False, 0
    return True, store.live_workers(session, timeout_s)
