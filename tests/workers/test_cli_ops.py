"""The commands that run and look after the service, the report command, and
progress where no terminal draws a bar."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import Engine, create_engine
from typer.testing import CliRunner

from contract.architectures import BUILTIN_CONFIGS, config_keys
from service.db import session_scope
from service.store.teams import create_api_key, create_team, revoke_api_key
from tests.report_data import RESULT
from tests.workers.conftest import MLP_CONFIG
from workers.cli import app
from workers.cli_ops import architectures_table, default_concurrency, worker_argv
from workers.progress import FractionLines, StageLines

runner = CliRunner()


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_stage_lines_give_one_line_per_stage_and_the_time_left() -> None:
    lines: list[str] = []
    clock = _Clock()
    progress = StageLines(lines.append, interval_s=30.0, clock=clock)
    progress("capture", 0, 1000)
    clock.now += 10
    progress("capture", 250, 1000)  # 10 s for a quarter: 30 s left; no line yet
    assert lines == []
    clock.now += 30
    progress("capture", 500, 1000)  # 40 s for half: 40 s left, a line (interval)
    assert lines == ["[   40.0 s] capture      500/1000, about 40 s left in this stage"]
    clock.now += 2
    progress("metrics", 0, 4)
    assert lines[-1] == "[   42.0 s] capture      500/1000 done in 42.0 s"
    clock.now += 3
    progress("metrics", 4, 4)
    progress.close()
    assert lines[-1] == "[   45.0 s] metrics      4/4 done in 3.0 s"
    assert len(lines) == 3


def test_fraction_lines_estimate_the_run() -> None:
    lines: list[str] = []
    clock = _Clock()
    progress = FractionLines(lines.append, clock=clock)
    progress("queued", 0.0)
    clock.now += 20
    progress("metrics", 0.4)  # 20 s for 40%: 30 s left
    progress("metrics", 0.5)  # same stage: no line
    assert lines == [
        "[    0.0 s] queued         0%, time left unknown",
        "[   20.0 s] metrics       40%, about 30 s left",
    ]


def test_worker_processes_and_threads_follow_the_machine() -> None:
    assert default_concurrency(["gpu", "cpu"], cores=16) == 1
    assert default_concurrency(["cpu"], cores=16) == 8
    assert default_concurrency(["cpu"], cores=1) == 1
    assert worker_argv(["cpu"], 8, "cpu@h", "info") == [
        "worker", "-Q", "cpu", "-c", "8", "--hostname", "cpu@h", "--loglevel", "info",
    ]  # fmt: skip
    out = runner.invoke(app, ["worker", "--queues", "gpu,tpu"])
    assert out.exit_code == 2 and "--queues takes gpu, cpu, control" in out.output


def test_architectures_lists_every_key_with_type_and_default() -> None:
    console = Console(width=200, record=True)
    console.print(architectures_table())
    text = console.export_text()
    for name in BUILTIN_CONFIGS:
        assert name in text
        for key, (kind, _) in config_keys(name).items():
            assert key in text and kind in text
    assert "[256, 16, 256]" in text  # mlp's default widths, as JSON


@pytest.fixture(params=["sqlite", "postgresql"])
def db(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    """A migrated database the commands find through BOTTLELENS_DATABASE_URL."""
    from service.db import get_engine, upgrade
    from service.settings import get_settings
    from tests.service.conftest import fresh_pg_database

    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
        else:
            url = stack.enter_context(fresh_pg_database())
        upgrade(url)
        monkeypatch.setenv("BOTTLELENS_DATABASE_URL", url)
        get_settings.cache_clear()
        get_engine.cache_clear()  # the commands' engine: this database's
        engine = create_engine(url)
        yield engine
        engine.dispose()
        get_settings.cache_clear()
        get_engine.cache_clear()


def test_teams_and_keys_are_listed_and_secrets_never_shown(db: Engine) -> None:
    for name in ("zeta", "acme"):
        with session_scope(db) as s:
            create_team(s, name)
    with session_scope(db) as s:
        kept, token = create_api_key(s, "acme", "read,submit")
    with session_scope(db) as s:
        gone, _ = create_api_key(s, "acme", "admin")
    with session_scope(db) as s:
        revoke_api_key(s, gone)
    teams = runner.invoke(app, ["teams", "list"], env={"COLUMNS": "200"})
    assert teams.exit_code == 0, teams.output
    assert teams.output.index("acme") < teams.output.index("zeta")
    keys = runner.invoke(
        app, ["keys", "list", "--team", "acme"], env={"COLUMNS": "200"}
    )
    assert keys.exit_code == 0, keys.output
    assert kept in keys.output and gone not in keys.output
    assert token not in keys.output and token.split("_")[-1] not in keys.output
    every = runner.invoke(app, ["keys", "list", "--revoked"], env={"COLUMNS": "200"})
    assert gone in every.output
    missing = runner.invoke(app, ["keys", "list", "--team", "nobody"])
    assert missing.exit_code == 2 and "no team 'nobody'" in missing.output


def test_report_writes_the_page_with_maps_found_beside_the_result(
    tmp_path: Path,
) -> None:
    from tests.report_data import report_result, write_artifacts

    result = tmp_path / "result.json"
    result.write_text(json.dumps(report_result()))
    write_artifacts(report_result(), tmp_path / "result.artifacts")
    out = runner.invoke(app, ["report", str(result), "-o", str(tmp_path / "r.html")])
    assert out.exit_code == 0, out.output
    page = (tmp_path / "r.html").read_text()
    assert 'data-figure="attribution-0"' in page
    bad = runner.invoke(app, ["report", str(tmp_path / "none.json")])
    assert bad.exit_code == 2 and "cannot read the result" in bad.output
    assert RESULT.exists()


def test_analyze_without_arch_config_names_the_defaults_and_writes_a_report(
    tmp_path: Path, inputs
) -> None:
    out = runner.invoke(
        app,
        [
            "analyze", "--arch", "mlp", "--weights", str(inputs.weights),
            "--data", str(inputs.data), "--samples", "100", "--device", "cpu",
            "--metrics", "id",
        ],
    )  # fmt: skip
    assert out.exit_code == 2
    assert "no --arch-config: mlp with its defaults" in out.output
    assert '"widths": [256, 16, 256]' in out.output
    report = tmp_path / "report.html"
    ok = runner.invoke(
        app,
        [
            "analyze", "--arch", "mlp", "--arch-config", json.dumps(MLP_CONFIG),
            "--weights", str(inputs.weights), "--data", str(inputs.data),
            "--samples", "100", "--device", "cpu", "--metrics", "id",
            "--report", str(report),
        ],
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "no --arch-config" not in ok.output
    # not a terminal: progress is a line per stage, with its time
    assert "profile" in ok.output and " done in " in ok.output
    assert report.read_text().count('data-figure="') == 2  # width and ID


def test_the_worker_leaves_the_report_beside_the_maps(tmp_path: Path, caplog) -> None:
    from tests.report_data import report_result, write_artifacts
    from workers.tasks import _write_report

    folder = write_artifacts(report_result(), tmp_path / "artifacts" / "a1")
    _write_report(report_result(), folder)
    page = (folder / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and 'data-figure="attribution-0"' in page
    blocked = tmp_path / "a file"
    blocked.write_text("")
    _write_report(report_result(), blocked)  # logged, never raised
    assert "could not write the HTML report" in caplog.text


@pytest.mark.parametrize(
    "command",
    [
        ["analyze"],
        ["report"],
        ["demo"],
        ["quickstart"],
        ["worker"],
        ["scheduler"],
        ["architectures"],
        ["teams", "list"],
        ["keys", "list"],
    ],
    ids=" ".join,
)
def test_help_fits_80_columns_uncut(command: list[str]) -> None:
    out = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.output
    assert max(len(line) for line in out.output.splitlines()) <= 80
    assert "…" not in out.output, out.output
