"""The invariants a chaos run ends with, read from the database and the storage
folder; ``integrity(url, storage)["violations"]`` maps each to a count (0: holds).

Plain SQL that SQLite and PostgreSQL both run; SQLite also runs its own
``foreign_key_check`` and ``integrity_check``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

ENDED = "('succeeded', 'failed', 'cancelled')"
# Each query counts the rows that break one invariant.
VIOLATIONS = {
    "analysis_queued_or_running": (
        "SELECT count(*) FROM analysis WHERE status IN ('queued', 'running')"
    ),
    "analysis_failed_without_reason": (
        "SELECT count(*) FROM analysis WHERE status = 'failed' AND ("
        "error_code IS NULL OR error_message IS NULL OR error_message = '')"
    ),
    "analysis_succeeded_without_one_export": (
        "SELECT count(*) FROM analysis a WHERE a.status = 'succeeded' AND "
        "(SELECT count(*) FROM analysis_export e WHERE e.analysis_id = a.id) <> 1"
    ),
    "analysis_metric_rows_not_as_saved": (
        "SELECT count(*) FROM analysis_export e WHERE e.n_rows <> "
        "(SELECT count(*) FROM metric_value m WHERE m.analysis_id = e.analysis_id)"
    ),
    "analysis_succeeded_without_layers": (
        "SELECT count(*) FROM analysis a WHERE a.status = 'succeeded' AND NOT EXISTS "
        "(SELECT 1 FROM layer l WHERE l.analysis_id = a.id)"
    ),
    "analysis_two_result_sets": (
        "SELECT count(*) FROM (SELECT analysis_id FROM layer GROUP BY analysis_id "
        "HAVING count(*) <> max(position) + 1 OR min(position) <> 0) t"
    ),
    "analysis_two_bottleneck_sets": (
        "SELECT count(*) FROM (SELECT analysis_id FROM bottleneck GROUP BY "
        "analysis_id HAVING count(*) <> max(position) + 1 OR min(position) <> 0) t"
    ),
    "analysis_unfinished_with_rows": (
        "SELECT count(*) FROM analysis a WHERE a.status <> 'succeeded' AND ("
        "EXISTS (SELECT 1 FROM layer l WHERE l.analysis_id = a.id) OR "
        "EXISTS (SELECT 1 FROM metric_value m WHERE m.analysis_id = a.id) OR "
        "EXISTS (SELECT 1 FROM bottleneck b WHERE b.analysis_id = a.id) OR "
        "EXISTS (SELECT 1 FROM analysis_export e WHERE e.analysis_id = a.id))"
    ),
    "metric_on_another_analysis_layer": (
        "SELECT count(*) FROM metric_value m LEFT JOIN layer l ON l.id = m.layer_id "
        "WHERE l.id IS NULL OR l.analysis_id <> m.analysis_id"
    ),
    "orphan_rows": (
        "SELECT (SELECT count(*) FROM layer WHERE analysis_id NOT IN "
        "(SELECT id FROM analysis)) + (SELECT count(*) FROM bottleneck WHERE "
        "analysis_id NOT IN (SELECT id FROM analysis)) + (SELECT count(*) FROM "
        "analysis_export WHERE analysis_id NOT IN (SELECT id FROM analysis)) + "
        "(SELECT count(*) FROM audit_run WHERE audit_id NOT IN (SELECT id FROM "
        "audit)) + (SELECT count(*) FROM analysis WHERE team_id NOT IN "
        "(SELECT id FROM team))"
    ),
    "audit_period_with_two_runs": (
        "SELECT count(*) FROM (SELECT audit_id, scheduled_for FROM audit_run "
        "GROUP BY audit_id, scheduled_for HAVING count(*) > 1) t"
    ),
    "audit_run_unfinished": (
        "SELECT count(*) FROM audit_run WHERE status IN ('pending', 'running')"
    ),
    "audit_run_on_unfinished_analysis": (
        "SELECT count(*) FROM audit_run r JOIN analysis a ON a.id = r.analysis_id "
        f"WHERE r.status IN ('pass', 'alert') AND a.status NOT IN {ENDED}"
    ),
    "upload_not_ready_or_rejected": (
        "SELECT (SELECT count(*) FROM model WHERE status NOT IN ('ready', "
        "'rejected')) + (SELECT count(*) FROM dataset WHERE status NOT IN "
        "('ready', 'rejected'))"
    ),
}
COUNTS = {
    "analyses": "SELECT count(*) FROM analysis",
    "succeeded": "SELECT count(*) FROM analysis WHERE status = 'succeeded'",
    "failed": "SELECT count(*) FROM analysis WHERE status = 'failed'",
    "max_attempt": "SELECT coalesce(max(attempt), 0) FROM analysis",
    "retried": "SELECT count(*) FROM analysis WHERE attempt > 1",
    "layer_rows": "SELECT count(*) FROM layer",
    "metric_rows": "SELECT count(*) FROM metric_value",
    "audit_runs": "SELECT count(*) FROM audit_run",
    "uploads_ready": "SELECT (SELECT count(*) FROM model WHERE status = 'ready') + "
    "(SELECT count(*) FROM dataset WHERE status = 'ready')",
    "uploads_rejected": "SELECT (SELECT count(*) FROM model WHERE status = "
    "'rejected') + (SELECT count(*) FROM dataset WHERE status = 'rejected')",
}


def integrity(database_url: str, storage: Path) -> dict[str, Any]:
    """``{"violations": {name: count}, "counts": {...}, "failed_by_code": {...}}``."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            violations = {
                k: int(conn.execute(text(q)).scalar_one())
                for k, q in VIOLATIONS.items()
            }
            counts = {
                k: int(conn.execute(text(q)).scalar_one()) for k, q in COUNTS.items()
            }
            codes = conn.execute(
                text(
                    "SELECT error_code, count(*) FROM analysis WHERE status = 'failed' "
                    "GROUP BY error_code"
                )
            ).all()
            hashes = {
                h
                for (h,) in conn.execute(
                    text("SELECT sha256 FROM model UNION SELECT sha256 FROM dataset")
                )
                if h
            }
            kept = {  # ready uploads with a file (a built-in dataset has none)
                h
                for (h,) in conn.execute(
                    text(
                        "SELECT sha256 FROM model WHERE status = 'ready' UNION "
                        "SELECT sha256 FROM dataset WHERE status = 'ready' "
                        "AND spec IS NULL"
                    )
                )
                if h
            }
            analyses = {a for (a,) in conn.execute(text("SELECT id FROM analysis"))}
            if engine.dialect.name == "sqlite":
                violations["sqlite_foreign_key_check"] = len(
                    conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                )
                ok = conn.exec_driver_sql("PRAGMA integrity_check").scalar_one()
                violations["sqlite_integrity_check"] = int(ok != "ok")
    finally:
        engine.dispose()
    violations |= orphan_files(storage, hashes, kept, analyses)
    return {
        "violations": violations,
        "counts": counts,
        "failed_by_code": {str(c): int(n) for c, n in codes},
    }


def orphan_files(
    storage: Path, hashes: set[str], kept: set[str], analyses: set[str]
) -> dict[str, int]:
    """Files no row refers to (``hashes``: every upload's): objects without an
    upload, artifacts without an analysis, temporary uploads left behind; and ready
    uploads (``kept``) whose file is missing."""
    objects = [p for p in (storage / "objects").rglob("*") if p.is_file()]
    artifacts = [p for p in (storage / "artifacts").glob("*") if p.is_dir()]
    tmp = [p for p in (storage / "tmp").rglob("*") if p.is_file()]
    on_disk = {p.name for p in objects}
    return {
        "orphan_object_files": sum(1 for p in objects if p.name not in hashes),
        "orphan_artifact_folders": sum(1 for p in artifacts if p.name not in analyses),
        "orphan_tmp_files": len(tmp),
        "upload_file_missing": sum(1 for h in kept if h not in on_disk),
    }
