"""``bottlelens analyses|results|series|compare|export``: a running service.

Each command is one call of ``bottlelens.client.Client``, configured by
``BOTTLELENS_URL`` and ``BOTTLELENS_API_KEY``. Tables by default, ``--json`` for
the API's answer as it is. An error is one line on stderr; the exit status is 2
when the request must change (a 4xx, a bad option) and 1 when the service failed
or could not be reached. ``bottlelens audits`` is in ``workers/cli_audits.py``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from service.schemas import AnalysisStatus
from service.schemas_series import ExportFormat, Order
from workers.outputs import OutputPathError, check_file

if TYPE_CHECKING:
    from bottlelens.client import Client

analyses_app = typer.Typer(help="Analyses on the service.", no_args_is_help=True)
results_app = typer.Typer(help="Result documents of analyses.", no_args_is_help=True)
series_app = typer.Typer(
    help="Model series: checkpoints of one architecture.", no_args_is_help=True
)
# compare and export are commands of `bottlelens` itself.
reports_app = typer.Typer()

console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]
Limit = Annotated[int, typer.Option(min=1, max=200, help="Page size.")]
Offset = Annotated[int, typer.Option(min=0, help="Items to skip.")]


def make_client() -> Client:
    """The client every command uses (tests put one on an in-process app here)."""
    from bottlelens.client import Client

    return Client()


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


@contextmanager
def _api() -> Iterator[Client]:
    """The client; an API error leaves as one line and its exit status."""
    from bottlelens.client import ApiError

    try:
        with make_client() as api:
            yield api
    except ApiError as exc:
        raise _fail(str(exc), 2 if exc.is_client_error else 1) from exc
    except (ValueError, OSError) as exc:
        raise _fail(" ".join(str(exc).split()) or type(exc).__name__) from exc


def _json_object(text: str | None, option: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "pass e.g. '{\"k\": 1}'"
        raise _fail(f"{option} is not valid JSON ({exc}); {hint}") from exc
    if not isinstance(value, dict):
        raise _fail(f"{option} must be a JSON object, got {type(value).__name__}")
    return value


def _out_file(out: Path | None) -> None:
    if out is not None:
        try:
            check_file(out, "--out")
        except OutputPathError as exc:
            raise _fail(str(exc)) from exc


@contextmanager
def _writer(out: Path | None) -> Iterator[IO[bytes]]:
    """``out`` written whole or not at all (a partial file is removed), or stdout."""
    if out is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    part = out.with_name(out.name + ".part")
    try:
        with part.open("wb") as f:
            yield f
        part.replace(out)
    finally:
        part.unlink(missing_ok=True)


def _show(obj: BaseModel, as_json: bool, table: Table | None = None) -> None:
    if as_json or table is None:
        print(obj.model_dump_json(indent=2))
    else:
        console.print(table)


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _fields(title: str, obj: BaseModel, names: Sequence[str]) -> Table:
    values = obj.model_dump()
    return _table(title, ("field", "value"), [(n, values[n]) for n in names])


# --- analyses and results ------------------------------------------------------


@analyses_app.command("list")
def analyses_list(
    model: Annotated[str | None, typer.Option(help="Only this model's.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset's.")] = None,
    status: Annotated[AnalysisStatus | None, typer.Option(help="Only these.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    as_json: JsonFlag = False,
) -> None:
    """The team's analyses, newest first."""
    with _api() as api:
        page = api.list_analyses(
            model_id=model,
            dataset_id=dataset,
            status=status,
            limit=limit,
            offset=offset,
        )
    rows = [
        (a.id, a.status, a.progress, a.model_id, a.dataset_id, a.created_at)
        for a in page.data
    ]
    columns = ("id", "status", "progress", "model", "dataset", "created")
    _show(page, as_json, _table(f"{page.count} analyses", columns, rows))


@analyses_app.command("get")
def analyses_get(
    analysis_id: Annotated[str, typer.Argument(help="The analysis id.")],
    as_json: JsonFlag = False,
) -> None:
    """Status, progress, stage, error and warnings of one analysis."""
    with _api() as api:
        analysis = api.get_analysis(analysis_id)
    names = ["id", "status", "progress", "stage", "attempt", "model_id"]
    names += ["dataset_id", "created_at", "started_at", "finished_at", "error"]
    _show(analysis, as_json, _fields(f"analysis {analysis.id}", analysis, names))
    if not as_json:
        for warning in analysis.warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)


@analyses_app.command("cancel")
def analyses_cancel(
    analysis_id: Annotated[str, typer.Argument(help="The analysis id.")],
    as_json: JsonFlag = False,
) -> None:
    """Cancel a queued or running analysis."""
    with _api() as api:
        analysis = api.cancel_analysis(analysis_id)
    if as_json:
        _show(analysis, True)
    else:
        console.print(f"analysis {analysis.id} {analysis.status}")


@results_app.command("get")
def results_get(
    analysis_id: Annotated[str, typer.Argument(help="The analysis id.")],
    out: Annotated[
        Path | None, typer.Option(help="File to write (default: stdout).")
    ] = None,
) -> None:
    """The result JSON of a succeeded analysis, byte for byte as the API sends it.

    The same document ``bottlelens analyze --out`` writes.
    """
    _out_file(out)
    with _api() as api, _writer(out) as f:
        size = api.download_results(analysis_id, f)
    if out is not None:
        err_console.print(f"{out}: {size} bytes", highlight=False, soft_wrap=True)


# --- series ----------------------------------------------------------------------


@series_app.command("create")
def series_create(
    name: Annotated[str, typer.Argument(help="The series' name.")],
    arch: Annotated[str, typer.Option(help="Architecture name in the registry.")],
    arch_config: Annotated[
        str | None, typer.Option(help="Architecture config as a JSON object.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a series; every checkpoint uploaded into it uses this architecture."""
    config = _json_object(arch_config, "--arch-config")
    with _api() as api:
        series = api.create_series(name, arch, config)
    if as_json:
        _show(series, True)
    else:
        console.print(f"series {series.name} created (id {series.id})")


@series_app.command("list")
def series_list(
    limit: Limit = 50, offset: Offset = 0, as_json: JsonFlag = False
) -> None:
    """The team's series, newest first."""
    with _api() as api:
        page = api.list_series(limit=limit, offset=offset)
    rows = [
        (s.id, s.name, s.architecture, s.checkpoints, s.created_at) for s in page.data
    ]
    columns = ("id", "name", "architecture", "checkpoints", "created")
    _show(page, as_json, _table(f"{page.count} series", columns, rows))


@series_app.command("upload")
def series_upload(
    series_id: Annotated[str, typer.Argument(help="The series id.")],
    weights: Annotated[
        Path, typer.Argument(help=".safetensors, or a torch.save state dict.")
    ],
    step: Annotated[int, typer.Option(min=0, help="Training step.")],
    epoch: Annotated[int | None, typer.Option(min=0, help="Epoch.")] = None,
    tag: Annotated[
        float | None, typer.Option(help="A number that orders a width series.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Upload a checkpoint into a series (streamed; validated by a worker)."""
    with _api() as api:
        checkpoint = api.upload_checkpoint(
            series_id, weights, step, epoch=epoch, tag=tag
        )
    if as_json:
        _show(checkpoint, True)
    else:
        model = checkpoint.model
        console.print(
            f"checkpoint step {checkpoint.step}: model {model.id} {model.status}"
        )


@series_app.command("analyse")
def series_analyse(
    series_id: Annotated[str, typer.Argument(help="The series id.")],
    dataset: Annotated[str, typer.Option(help="The dataset id.")],
    config: Annotated[
        str | None, typer.Option(help="The analysis config as a JSON object.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """One analysis per checkpoint; those already run with this config are reused."""
    body = _json_object(config, "--config")
    with _api() as api:
        runs = api.analyse_series(series_id, dataset, body)
    rows = [(r.step, r.tag, r.model_id, r.analysis_id, r.reused) for r in runs.data]
    columns = ("step", "tag", "model", "analysis", "reused")
    _show(runs, as_json, _table(f"{runs.count} analyses", columns, rows))


@series_app.command("trajectory")
def series_trajectory(
    series_id: Annotated[str, typer.Argument(help="The series id.")],
    metric: Annotated[str, typer.Option(help="e.g. intrinsic_dimension.")],
    estimator: Annotated[str, typer.Option(help="e.g. twonn.")],
    dataset: Annotated[str, typer.Option(help="The dataset id.")],
    order: Annotated[Order, typer.Option(help="tag: a width series.")] = "step",
    as_json: JsonFlag = False,
) -> None:
    """Each layer's metric over the checkpoints (one column per checkpoint)."""
    with _api() as api:
        path = api.trajectory(
            series_id,
            metric=metric,
            estimator=estimator,
            dataset_id=dataset,
            order=order,
        )
    places = sorted(
        {(p.step, p.tag) for layer in path.layers for p in layer.points},
        key=lambda place: (place[1] or 0.0) if order == "tag" else place[0],
    )
    columns = [
        "layer",
        *(f"tag {t:g}" if order == "tag" else f"step {s}" for s, t in places),
    ]
    rows = []
    for layer in path.layers:
        values = {(p.step, p.tag): p.value for p in layer.points}
        rows.append([layer.layer, *(values.get(place) for place in places)])
    title = f"{metric} ({estimator}) over the series"
    _show(path, as_json, _table(title, columns, rows))


# --- compare and export ------------------------------------------------------------


@reports_app.command("compare")
def compare(
    a: Annotated[str, typer.Argument(help="The first analysis id.")],
    b: Annotated[str, typer.Argument(help="The second analysis id.")],
    as_json: JsonFlag = False,
) -> None:
    """Two analyses of one architecture: per layer and metric, b - a."""
    with _api() as api:
        diff = api.compare(a, b)
    rows = [
        (
            r.layer,
            r.metric,
            r.estimator,
            r.a,
            r.b,
            r.difference,
            r.relative_change,
            r.intervals_overlap,
        )
        for r in diff.rows
    ]
    columns = ("layer", "metric", "estimator", "a", "b", "b - a", "relative", "overlap")
    _show(diff, as_json, _table(f"{b} vs {a} ({diff.architecture})", columns, rows))
    if not as_json:
        console.print(f"bottlenecks added: {', '.join(diff.bottlenecks_added) or '-'}")
        console.print(f"bottlenecks lost: {', '.join(diff.bottlenecks_lost) or '-'}")


@reports_app.command("export")
def export(
    since: Annotated[
        str, typer.Option(help="The cursor printed by the previous export; 0: all.")
    ] = "0",
    format: Annotated[ExportFormat, typer.Option(help="The rows' format.")] = "csv",
    limit: Annotated[int | None, typer.Option(min=1, help="Rows per page.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="File to write (default: stdout).")
    ] = None,
) -> None:
    """The reporting export after a cursor; the next cursor goes to stderr.

    One row per analysis, layer, metric and estimator; stderr ends with
    ``next cursor: N``, the --since of the next export.
    """
    _out_file(out)
    with _api() as api:
        page = api.export(since=since, format=format, limit=limit)
        with page, _writer(out) as f:
            page.save(f)
    err_console.print(
        f"next cursor: {page.next_cursor}", highlight=False, soft_wrap=True
    )
