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
    "cancel_analysis",
    "claim_analysis",
    "create_analysis",
    "create_api_key",
    "create_dataset",
    "create_model",
    "create_team",
    "delete_upload",
    "discard_analysis",
    "fail_analysis",
    "finished_analysis",
    "forget_worker",
    "get_analysis",
    "get_api_key",
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
    "list_datasets",
    "list_models",
    "live_workers",
    "mark_upload",
    "ping",
    "record_worker_heartbeat",
    "revoke_api_key",
    "save_results",
    "team_max_upload_bytes",
    "uploads_to_reconcile",
]
