"""The Celery tasks: ids come in, one analysis call is made, rows go out.

Every task is idempotent. A task reads its job from the store and does nothing when
the job is gone or finished; one held by another worker's live lease is retried when
that lease would end (its worker may have been killed). So a message delivered twice
(Redis after a visibility timeout, the reconciler, a user retry) runs the work at
most once at a time and saves one result set.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from celery import signals
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from sqlalchemy.exc import OperationalError

from analysis import analyse, load_dataset, load_model
from analysis.datasets import Dataset
from analysis.errors import (
    BottlelensError,
    CheckpointMismatchError,
    DataError,
    FileTooLargeError,
    InvalidInputError,
    ShapeMismatchError,
    UnknownArchitectureError,
    UnsafeFileError,
)
from contract.errors import ContractError
from contract.tasks import RECONCILE, ROUTES, RUN_ANALYSIS, VALIDATE_UPLOAD
from service import store
from service.db import session_scope
from service.schemas import DatasetRef, ModelRef, UploadJob
from service.settings import get_settings
from service.storage import artifacts_dir
from workers.celery_app import app
from workers.lease import AnalysisStopped, Lease

log = logging.getLogger(__name__)
Kind = Literal["model", "dataset"]
# How often a delivery that met another worker's live lease comes back when the
# lease would have run out: once suffices when that worker died; a live one keeps
# renewing, and the reconciler covers whatever is left after the last try.
LEASE_RETRIES = 3

# Stable machine-readable codes of the failures a user can act on (most specific
# class first); the service's own codes (invalid_input, unsafe_file, too_large) agree.
ERROR_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (UnsafeFileError, "unsafe_file"),
    (FileTooLargeError, "too_large"),
    (CheckpointMismatchError, "checkpoint_mismatch"),
    (ShapeMismatchError, "shape_mismatch"),
    (UnknownArchitectureError, "unknown_architecture"),
    (DataError, "data_error"),
    (InvalidInputError, "invalid_input"),
    (BottlelensError, "analysis_error"),
)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ContractError):
        return exc.code
    for cls, code in ERROR_CODES:
        if isinstance(exc, cls):
            return code
    return "internal_error"


def worker_id(task_id: str | None) -> str:
    """Who holds a lease: host, process and delivery."""
    return f"{socket.gethostname()}:{os.getpid()}:{task_id or 'local'}"


# --- validate_upload ----------------------------------------------------------


@app.task(name=VALIDATE_UPLOAD)
def validate_upload(kind: Kind, object_id: str) -> str:
    """Run the intake checks of an upload; mark it ``ready`` or ``rejected``."""
    if kind not in ("model", "dataset"):
        raise ValueError(f"kind must be model or dataset, not {kind!r}")
    with session_scope() as session:
        job = store.get_upload_for_validation(session, kind, object_id)
    if job is None:
        return "skipped"
    try:
        limit = _max_bytes(job.team_id)
        info = (
            _check_model(job, limit)
            if job.kind == "model"
            else _check_dataset(job, limit)
        )
    except Exception as exc:
        # Anything unexpected rejects too: an upload must not stay validating.
        code, message = _failure(exc)
        error = {"code": code, "message": message}
        with session_scope() as session:
            store.mark_upload(session, kind, object_id, status="rejected", error=error)
        if code == "internal_error":
            raise
        return "rejected"
    with session_scope() as session:
        store.mark_upload(session, kind, object_id, status="ready", info=info)
    return "ready"


def _check_model(job: UploadJob, max_bytes: int) -> dict[str, Any]:
    if job.path is None or job.architecture is None:
        raise InvalidInputError("the model upload has no file or no architecture")
    model, ckpt = load_model(
        job.architecture,
        job.architecture_config or {},
        job.path,
        **_weight_caps(max_bytes),
    )
    return {
        "checkpoint_format": ckpt.format,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "nonfinite": ckpt.nonfinite,
    }


def _check_dataset(job: UploadJob, max_bytes: int) -> dict[str, Any]:
    ds = open_dataset(job.path, job.spec, job.format, max_bytes=max_bytes)
    return {
        "n_samples": len(ds.x),
        "sample_shape": list(ds.x.shape[1:]),
        "dtype": str(ds.x.dtype).removeprefix("torch."),
        "has_labels": ds.y is not None,
        "sha256": ds.sha256,  # kept for built-ins, which have no file hash
    }


def _max_bytes(team_id: str) -> int:
    """The team's upload limit: the one the API took its files under."""
    with session_scope() as session:
        return store.team_max_upload_bytes(session, team_id)


def _weight_caps(max_bytes: int | None) -> dict[str, Any]:
    """The caps as ``load_model`` takes them: the team's upload limit
    (``max_bytes``; None: the settings'), the settings' archive caps."""
    settings = get_settings()
    return {
        "max_bytes": max_bytes or settings.max_upload_bytes,
        "max_archive_bytes": settings.max_archive_bytes,
        "max_compression_ratio": settings.max_compression_ratio,
    }


def _dataset_caps(max_bytes: int | None) -> dict[str, Any]:
    """The caps as ``load_dataset`` takes them; ``max_bytes`` as for weights."""
    settings = get_settings()
    return {
        "max_bytes": max_bytes or settings.max_upload_bytes,
        "max_archive_bytes": settings.max_archive_bytes,
        "max_compression_ratio": settings.max_compression_ratio,
        "max_csv_columns": settings.max_csv_columns,
        "max_csv_rows": settings.max_csv_rows,
    }


def open_dataset(
    path: str | None, spec: str | None, fmt: str, *, max_bytes: int | None = None
) -> Dataset:
    """Load a stored dataset file (it has no suffix: give it its format's) or a spec.

    A stored file's ``spec`` in the result is ``sha256:<hash>``, which says what was
    analysed without naming a path inside the server. ``max_bytes``: the owning
    team's upload limit (None: the settings').
    """
    if path is None:
        if spec is None:
            raise InvalidInputError("the dataset has neither a file nor a spec")
        return load_dataset(spec, **_dataset_caps(max_bytes))
    with tempfile.TemporaryDirectory(prefix="bottlelens-") as tmp:
        link = Path(tmp) / f"dataset.{fmt}"
        link.symlink_to(path)
        ds = load_dataset(str(link), **_dataset_caps(max_bytes))
    ds.spec = f"sha256:{ds.sha256}"
    ds.name = f"dataset.{fmt}"
    return ds


# --- run_analysis -------------------------------------------------------------


@app.task(name=RUN_ANALYSIS, bind=True)
def run_analysis(self: Any, analysis_id: str) -> str:
    """Claim the analysis, run ``analysis.analyse`` under a lease, save the result."""
    settings = get_settings()
    holder = worker_id(self.request.id)
    with session_scope() as session:
        job = store.claim_analysis(
            session,
            analysis_id,
            holder,
            lease_s=settings.lease_s,
            max_attempts=settings.max_attempts,
        )
    if job is None:
        countdown = lease_retry_countdown(analysis_id, self.request.retries)
        if countdown is None:
            return "skipped"
        log.info("analysis %s: leased elsewhere, back in %d s", analysis_id, countdown)
        raise self.retry(countdown=countdown, max_retries=LEASE_RETRIES)
    log.info("analysis %s: attempt %d by %s", analysis_id, job.attempt, holder)
    try:
        with Lease(analysis_id, holder, settings.lease_s) as lease:
            result = run_job(
                job.model,
                job.dataset,
                job.config,
                progress=lease.report,
                artifacts_dir=artifacts_dir(settings.storage_dir, analysis_id),
                max_bytes=_max_bytes(job.team_id),
            )
            lease.check()
            _write_report(result, artifacts_dir(settings.storage_dir, analysis_id))
        saved = _save(analysis_id, holder, result)
    except AnalysisStopped:
        log.info("analysis %s: stopped (cancelled or lease lost)", analysis_id)
        return "stopped"
    except Exception as exc:
        # A failure is recorded, never retried: the same inputs fail the same way.
        code, message = _failure(exc)
        with session_scope() as session:
            store.fail_analysis(session, analysis_id, code=code, message=message)
        if code == "internal_error":
            raise
        return "failed"
    finally:
        _release_gpu_memory()
        _end_audit_runs(analysis_id)
    return "succeeded" if saved else "skipped"


# A dropped database connection at save time (a restart, a failover,
# pg_terminate_backend) is tried again after these pauses: the save is one
# transaction, so a failed try left nothing behind.
SAVE_RETRY_S = (1.0, 3.0)


def _save(analysis_id: str, holder: str, result: dict[str, Any]) -> bool:
    for pause in (*SAVE_RETRY_S, None):
        try:
            with session_scope() as session:
                return store.save_results(session, analysis_id, holder, result)
        except OperationalError:
            if pause is None:
                raise
            log.warning("analysis %s: saving failed, again in %g s", analysis_id, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")


@signals.task_failure.connect(sender=run_analysis)
def _on_hard_time_limit(
    exception: BaseException | None = None, args: Any = None, **_: Any
) -> None:
    """The hard limit killed the pool process (the analysis ignored the soft one):
    the worker's main process records the failure, else the analysis would stay
    running until its lease ran out and be run again to the same end."""
    if not isinstance(exception, TimeLimitExceeded) or not args:
        return
    code, message = _failure(exception)
    with session_scope() as session:
        store.fail_analysis(session, str(args[0]), code=code, message=message)
    _end_audit_runs(str(args[0]))


def _write_report(result: dict[str, Any], folder: Path) -> None:
    """The HTML report beside the maps (``GET .../report``); one that cannot be
    drawn leaves the result as it is, and the route then says it is missing."""
    from analysis.reporting import REPORT_FILE, write_html

    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_html(result, folder / REPORT_FILE, folder)
    except Exception:
        log.exception("could not write the HTML report into %s", folder)


def _end_audit_runs(analysis_id: str) -> None:
    """An audit run waiting on this analysis ends now, not at the next tick."""
    from workers.scheduler import finish_runs

    try:
        finish_runs(analysis_id=analysis_id)
    except Exception:  # the scheduler's next tick ends it
        log.exception("analysis %s: could not end its audit run", analysis_id)


def lease_retry_countdown(analysis_id: str, retries: int) -> int | None:
    """Seconds to wait before this delivery tries again, or None to drop it.

    A live lease of another delivery may belong to a worker that was killed (Redis
    redelivered its task); coming back when the lease runs out picks the analysis up
    about one lease later instead of after the reconciler's grace. A finished,
    cancelled or unleased analysis is dropped.
    """
    if retries >= LEASE_RETRIES:
        return None
    with session_scope() as session:
        left = store.lease_expires_in(session, analysis_id)
    return None if left is None else max(1, math.ceil(left))


def run_job(
    model_ref: ModelRef,
    dataset_ref: DatasetRef,
    config: dict[str, Any],
    *,
    progress: Any = None,
    artifacts_dir: Path | None = None,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    """Load the model and dataset of a job and analyse; the result's JSON form.

    ``artifacts_dir`` receives attribution maps when the config asks for them (the
    result holds paths relative to it). ``max_bytes``: the owning team's upload
    limit (None: the settings').
    """
    model, ckpt = load_model(
        model_ref.architecture,
        model_ref.architecture_config,
        model_ref.path,
        **_weight_caps(max_bytes),
    )
    dataset = open_dataset(
        dataset_ref.path, dataset_ref.spec, dataset_ref.format, max_bytes=max_bytes
    )
    model_info = ckpt.model_info(
        model_ref.architecture, model_ref.architecture_config, model_ref.filename
    )
    result = analyse(
        model,
        dataset,
        config,
        model_info=model_info,
        progress=progress,
        artifacts_dir=artifacts_dir,
        fatal=(SoftTimeLimitExceeded, AnalysisStopped),
    )
    return result.to_dict()


def _failure(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
        limit = get_settings().task_time_limit_s
        return "time_limit", (
            f"the analysis ran past the time limit of about {limit} s; analyse fewer "
            "samples or layers, or ask for a longer BOTTLELENS_TASK_TIME_LIMIT_S"
        )
    if _out_of_memory(exc):
        return "out_of_memory", (
            f"the analysis ran out of memory ({exc}); lower samples, batch_size or "
            "budget in the config"
        )
    code = error_code(exc)
    if code == "internal_error":
        log.exception("analysis failed unexpectedly")
        return code, f"an unexpected error in the worker: {type(exc).__name__}: {exc}"
    return code, str(exc)


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError | torch.cuda.OutOfMemoryError)


def _release_gpu_memory() -> None:
    """Give the cached blocks back: the next task may be another process's."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- reconcile ----------------------------------------------------------------


@app.task(name=RECONCILE)
def reconcile() -> int:
    """Re-enqueue analyses left queued (message lost) or running (lease expired),
    and uploads left validating (message lost)."""
    return reconcile_now()


def reconcile_now() -> int:
    """Send the stuck work again; the number of messages sent."""
    settings = get_settings()
    now, grace_s = datetime.now(UTC), settings.queued_grace_s
    with session_scope() as session:
        todo = store.analyses_to_reconcile(session, now=now, queued_grace_s=grace_s)
    for analysis_id, queue in todo:
        run_analysis.apply_async((analysis_id,), queue=queue)
    with session_scope() as session:
        uploads = store.uploads_to_reconcile(session, now=now, grace_s=grace_s)
    for kind, object_id in uploads:
        validate_upload.apply_async((kind, object_id), queue=ROUTES[VALIDATE_UPLOAD])
    if todo or uploads:
        log.info(
            "reconcile: re-enqueued %d analyses, %d uploads", len(todo), len(uploads)
        )
    return len(todo) + len(uploads)
