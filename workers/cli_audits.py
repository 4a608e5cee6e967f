"""``bottlelens audits create|list|runs|pause|resume``: scheduled audits on a
running service, through ``bottlelens.client`` (see ``workers/cli_remote.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from workers.cli_remote import (
    JsonFlag,
    Limit,
    Offset,
    _api,
    _cell,
    _fail,
    _json_object,
    _show,
    _table,
    console,
)

audits_app = typer.Typer(help="Scheduled audits and their runs.", no_args_is_help=True)


def _rule(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) not in (5, 6) or (len(parts) == 6 and parts[5] != "no-overlap"):
        raise _fail(
            f"--rule {text!r}: write METRIC:ESTIMATOR:LAYERS:OPERATOR:THRESHOLD"
            "[:no-overlap], e.g. intrinsic_dimension:twonn:bottlenecks:"
            "relative_change:0.2"
        )
    metric, estimator, layers, operator, threshold = parts[:5]
    try:
        value = float(threshold)
    except ValueError as exc:
        problem = f"the threshold {threshold!r} is not a number"
        raise _fail(f"--rule {text!r}: {problem}") from exc
    return {
        "metric": metric,
        "estimator": estimator,
        "layers": layers,
        "operator": operator,
        "threshold": value,
        "require_no_overlap": len(parts) == 6,
    }


@audits_app.command("create")
def audits_create(
    dataset: Annotated[str, typer.Option(help="The dataset id.")],
    rule: Annotated[
        list[str],
        typer.Option(
            help="METRIC:ESTIMATOR:LAYERS:OPERATOR:THRESHOLD[:no-overlap]; LAYERS is "
            "a name, a glob or bottlenecks; OPERATOR relative_change, abs_change, "
            "above or below. Repeat for more rules."
        ),
    ],
    model: Annotated[str | None, typer.Option(help="The model id.")] = None,
    series: Annotated[
        str | None, typer.Option(help="A series id: its latest checkpoint each run.")
    ] = None,
    cron: Annotated[str | None, typer.Option(help="5-field cron in UTC.")] = None,
    every: Annotated[
        int | None, typer.Option(min=1, help="Interval in seconds.")
    ] = None,
    baseline: Annotated[
        str, typer.Option(help="first, previous, or an analysis id.")
    ] = "previous",
    config: Annotated[
        str | None, typer.Option(help="The analysis config as a JSON object.")
    ] = None,
    name: Annotated[str, typer.Option(help="The audit's name.")] = "audit",
    webhook: Annotated[
        str | None, typer.Option(help="URL to post alerts to (on the allowlist).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Schedule an audit: analyse on a schedule, compare with a baseline, alert."""
    if (model is None) == (series is None):
        raise _fail("give exactly one of --model and --series")
    if (cron is None) == (every is None):
        raise _fail("give exactly one of --cron and --every")
    body: dict[str, Any] = {
        "name": name,
        "model": model if series is None else {"series_id": series},
        "dataset_id": dataset,
        "config": _json_object(config, "--config"),
        "schedule": {"cron": cron} if every is None else {"interval_s": every},
        "baseline": (
            baseline if baseline in ("first", "previous") else {"analysis_id": baseline}
        ),
        "rules": [_rule(r) for r in rule],
    }
    if webhook is not None:
        body["webhook_url"] = webhook
    with _api() as api:
        audit = api.create_audit(body)
    if as_json:
        _show(audit, True)
    else:
        console.print(
            f"audit {audit.name} created (id {audit.id}); next run "
            f"{_cell(audit.next_run_at)} UTC"
        )


@audits_app.command("list")
def audits_list(
    limit: Limit = 50, offset: Offset = 0, as_json: JsonFlag = False
) -> None:
    """The team's audits, newest first."""
    with _api() as api:
        page = api.list_audits(limit=limit, offset=offset)
    rows = [
        (
            a.id,
            a.name,
            a.status,
            a.model_id or f"series {a.series_id}",
            len(a.rules),
            a.next_run_at,
        )
        for a in page.data
    ]
    columns = ("id", "name", "status", "model", "rules", "next run (UTC)")
    _show(page, as_json, _table(f"{page.count} audits", columns, rows))


@audits_app.command("runs")
def audits_runs(
    audit_id: Annotated[str, typer.Argument(help="The audit id.")],
    since: Annotated[
        datetime | None, typer.Option(help="Only runs scheduled after (UTC).")
    ] = None,
    limit: Limit = 50,
    as_json: JsonFlag = False,
) -> None:
    """The audit's runs, oldest first; an alert lists the rows that fired."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with _api() as api:
        page = api.audit_runs(audit_id, since=since, limit=limit)
    rows = [
        (
            r.scheduled_for,
            r.status,
            r.analysis_id,
            len(r.fired),
            r.error and r.error.message,
        )
        for r in page.data
    ]
    columns = ("scheduled (UTC)", "status", "analysis", "fired", "error")
    _show(page, as_json, _table(f"{page.count} runs", columns, rows))
    if not as_json:
        for r in page.data:
            for f in r.fired:
                console.print(
                    f"alert {_cell(r.scheduled_for)}: {f.layer} {f.metric} "
                    f"({f.estimator}) {f.operator} {f.threshold:g}: baseline "
                    f"{_cell(f.baseline_value)}, new {_cell(f.new_value)}",
                    highlight=False,
                )


def _audit_state(audit_id: str, pause: bool, as_json: bool) -> None:
    with _api() as api:
        audit = api.pause_audit(audit_id) if pause else api.resume_audit(audit_id)
    if as_json:
        _show(audit, True)
    else:
        console.print(f"audit {audit.id} {audit.status}")


@audits_app.command("pause")
def audits_pause(
    audit_id: Annotated[str, typer.Argument(help="The audit id.")],
    as_json: JsonFlag = False,
) -> None:
    """Stop making runs (a run already started finishes)."""
    _audit_state(audit_id, True, as_json)


@audits_app.command("resume")
def audits_resume(
    audit_id: Annotated[str, typer.Argument(help="The audit id.")],
    as_json: JsonFlag = False,
) -> None:
    """Run again from the next scheduled time (the paused period is not caught up)."""
    _audit_state(audit_id, False, as_json)
