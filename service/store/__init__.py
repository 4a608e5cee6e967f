"""Every query of the service and the workers. ORM rows never leave this package.

One module per concern (teams, uploads, analyses, jobs); import the package,
``from service import store``, and call ``store.<function>``.

Transactions: each function runs inside the caller's ``session_scope()`` and only
flushes; the scope commits. Read-then-write functions call ``begin_write`` first
(``BEGIN IMMEDIATE`` on SQLite) and lock the rows they change with
``SELECT ... FOR UPDATE`` (PostgreSQL), so concurrent workers and requests serialise
on them; on SQLite they must be the first call in their session_scope.
"""

from __future__ import annotations

from service.store._common import (
    ping,
)
from service.store.analyses import (
    cancel_analysis,
    create_analysis,
    discard_analysis,
    finished_analysis,
    get_analysis,
    get_bottlenecks,
    get_layers,
    get_results,
    layer_metric_across_analyses,
    list_analyses,
)
from service.store.audit_runs import (
    audit_runs_to_finish,
    claim_due_audit_runs,
    count_audit_runs,
    due_webhook_deliveries,
    finish_audit_run,
    pending_audit_runs,
    record_webhook_delivery,
    start_audit_run,
)
from service.store.audits import (
    create_audit,
    delete_audit,
    get_audit,
    list_audit_alerts,
    list_audit_runs,
    list_audits,
    pause_audit,
    resume_audit,
)
from service.store.jobs import (
    analyses_to_reconcile,
    claim_analysis,
    fail_analysis,
    heartbeat,
    lease_expires_in,
    save_results,
    team_max_upload_bytes,
)
from service.store.teams import (
    api_key_for_token,
    create_api_key,
    create_team,
    get_api_key,
    get_team,
    revoke_api_key,
)
from service.store.uploads import (
    create_dataset,
    create_model,
    delete_upload,
    get_dataset,
    get_model,
    get_upload_for_validation,
    list_datasets,
    list_models,
    mark_upload,
    uploads_to_reconcile,
)
from service.store.workers import (
    forget_worker,
    live_workers,
    record_worker_heartbeat,
)

__all__ = [
    "analyses_to_reconcile",
    "api_key_for_token",
    "audit_runs_to_finish",
    "cancel_analysis",
    "claim_analysis",
    "claim_due_audit_runs",
    "count_audit_runs",
    "create_analysis",
    "create_api_key",
    "create_audit",
    "create_dataset",
    "create_model",
    "create_team",
    "delete_audit",
    "delete_upload",
    "discard_analysis",
    "due_webhook_deliveries",
    "fail_analysis",
    "finish_audit_run",
    "finished_analysis",
    "forget_worker",
    "get_analysis",
    "get_api_key",
    "get_audit",
    "get_bottlenecks",
    "get_dataset",
    "get_layers",
    "get_model",
    "get_results",
    "get_team",
    "get_upload_for_validation",
    "heartbeat",
    "layer_metric_across_analyses",
    "lease_expires_in",
    "list_analyses",
    "list_audit_alerts",
    "list_audit_runs",
    "list_audits",
    "list_datasets",
    "list_models",
    "live_workers",
    "mark_upload",
    "pause_audit",
    "pending_audit_runs",
    "ping",
    "record_webhook_delivery",
    "record_worker_heartbeat",
    "resume_audit",
    "revoke_api_key",
    "save_results",
    "start_audit_run",
    "team_max_upload_bytes",
    "uploads_to_reconcile",
]
