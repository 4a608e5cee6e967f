"""The Celery app of the workers, built from the service settings.

Production: Redis as the broker. Embedded mode (``bottlelens serve --embedded``):
SQLite as the broker (``sqla+sqlite:///./.bottlelens/...``), one worker process.

Delivery is at least once: a task is acknowledged after it ran (``acks_late``), a
worker takes one task at a time (``prefetch_multiplier=1``), and a task whose worker
died goes back to the queue (``reject_on_worker_lost``). Redis hands an unacknowledged
task to another worker after the visibility timeout, so the hard time limit must end
a task before that; the app refuses to start otherwise. Duplicates are harmless: the
tasks claim a lease in the database first (``workers.tasks``), and the reconciler
re-enqueues what a lost worker or a lost message left behind.

Start a worker with ``celery -A workers.celery_app worker -Q gpu,cpu,control -c 1``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from contract.tasks import CPU_QUEUE, QUEUES, RECONCILE, SCHEDULER_TICK
from contract.tasks import ROUTES as TASK_ROUTES
from service.settings import Settings, get_settings

ROUTES = {task: {"queue": queue} for task, queue in TASK_ROUTES.items()}


class WorkerConfigError(ValueError):
    """The worker settings contradict each other; the message says what to change."""


def _single_threaded_blas() -> None:
    """numpy's BLAS starts with one thread (it reads this when it is loaded); the
    pools are sized by ``analysis.threads.set_threads`` when the worker starts."""
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def _broker_options(settings: Settings) -> dict[str, Any]:
    url = settings.broker_url
    if url.startswith(("redis://", "rediss://")):
        visibility = settings.broker_visibility_timeout_s
        # Sweep for abandoned messages often enough that a short visibility
        # timeout (tests) is honoured; one scan per sweep.
        sweep = max(1, min(10, visibility // 10))
        return {
            "visibility_timeout": visibility,
            "unacked_restore_interval": sweep,
            "unacked_restore_throttle": 1,
            "socket_timeout": 30,
            "socket_connect_timeout": settings.broker_timeout_s,
        }
    if url.startswith("sqla+sqlite"):
        # kombu passes these to create_engine: wait for a writer instead of failing.
        return {"connect_args": {"timeout": settings.sqlite_busy_timeout_ms / 1000}}
    return {}


def check_limits(settings: Settings) -> None:
    """Refuse a hard time limit that the broker's visibility timeout would cut."""
    limit, visibility = settings.task_time_limit_s, settings.broker_visibility_timeout_s
    if limit >= visibility:
        raise WorkerConfigError(
            f"BOTTLELENS_TASK_TIME_LIMIT_S ({limit} s) must be below "
            f"BOTTLELENS_BROKER_VISIBILITY_TIMEOUT_S ({visibility} s): Redis hands a "
            "task that is still running to a second worker once the visibility "
            "timeout passes. Lower the time limit or raise the visibility timeout."
        )


def make_celery(settings: Settings | None = None) -> Celery:
    """The Celery app for ``settings`` (default: the process settings)."""
    settings = settings or get_settings()
    check_limits(settings)
    limit = settings.task_time_limit_s
    app = Celery("bottlelens", include=["workers.tasks", "workers.scheduler"])
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=_broker_options(settings),
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,  # state lives in the database
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=limit,
        # The soft limit lets the task record a clear failure before the hard kill.
        task_soft_time_limit=limit - min(max(5, limit // 20), limit // 2),
        # Each queue its own direct exchange, as the API's client declares them.
        task_queues=[
            Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES
        ],
        task_default_queue=CPU_QUEUE,
        task_routes=ROUTES,
        task_serializer="json",
        accept_content=["json"],
        beat_schedule={
            "reconcile": {
                "task": RECONCILE,
                "schedule": float(settings.reconcile_interval_s),
                "options": {
                    "queue": TASK_ROUTES[RECONCILE],
                    "expires": settings.reconcile_interval_s,
                },
            },
            "scheduler-tick": {
                "task": SCHEDULER_TICK,
                "schedule": float(settings.scheduler_tick_s),
                "options": {
                    "queue": TASK_ROUTES[SCHEDULER_TICK],
                    "expires": settings.scheduler_tick_s,
                },
            },
        },
    )
    return app


_single_threaded_blas()
app = make_celery()


@signals.worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    """A prefork child must not share the parent's database connections."""
    from service.db import get_engine

    get_engine().dispose(close=False)
    _set_threads()


@signals.worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    """Split the CPUs between the pool's processes (forked after this runs); an
    OMP_NUM_THREADS given to the worker wins."""
    _set_threads(max(1, int(getattr(sender, "concurrency", 1) or 1)))


_heartbeat: list[Any] = []  # the running Heartbeat, once the worker is ready


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    from workers.heartbeat import Heartbeat

    queues = [q.name for q in app.amqp.queues.consume_from.values()]
    interval = get_settings().worker_heartbeat_interval_s
    beat = Heartbeat(str(getattr(sender, "hostname", "worker")), queues, interval)
    beat.start()
    _heartbeat.append(beat)


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    while _heartbeat:
        _heartbeat.pop().stop()


@signals.worker_ready.connect
def _reconcile_at_start(**_: Any) -> None:
    """Whatever a previous worker left running or unsent goes back to the queue."""
    from workers.tasks import reconcile_now

    reconcile_now()


def _set_threads(processes: int = 1) -> None:
    """The one thread policy (``analysis.threads``); a forked child finds the
    parent's OMP_NUM_THREADS in its environment and keeps it."""
    from analysis.threads import set_threads

    set_threads(processes=processes)
