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
    get_section,
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
from service.store.compare import (
    compare_analyses,
)
from service.store.exports import (
    export_page,
    export_rows,
    number_for_export,
    parse_cursor,
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
from service.store.series import (
    add_checkpoint,
    analyse_series,
    create_series,
    delete_series,
    get_series,
    latest_checkpoint,
    list_checkpoints,
    list_series,
    trajectory,
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
    "add_checkpoint",
    "analyse_series",
    "analyses_to_reconcile",
    "api_key_for_token",
    "audit_runs_to_finish",
    "cancel_analysis",
    "claim_analysis",
    "claim_due_audit_runs",
    "compare_analyses",
    "count_audit_runs",
    "create_analysis",
    "create_api_key",
    "create_audit",
    "create_dataset",
    "create_model",
    "create_series",
    "create_team",
    "delete_audit",
    "delete_series",
    "delete_upload",
    "discard_analysis",
    "due_webhook_deliveries",
    "export_page",
    "export_rows",
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
    "get_section",
    "get_series",
    "get_team",
    "get_upload_for_validation",
    "heartbeat",
    "latest_checkpoint",
    "layer_metric_across_analyses",
    "lease_expires_in",
    "list_analyses",
    "list_audit_alerts",
    "list_audit_runs",
    "list_audits",
    "list_checkpoints",
    "list_datasets",
    "list_models",
    "list_series",
    "live_workers",
    "mark_upload",
    "number_for_export",
    "parse_cursor",
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
    "trajectory",
    "uploads_to_reconcile",
]
