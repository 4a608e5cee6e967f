"""The ``bottlelens`` command line.

Commands import what they need when they run, so ``bottlelens --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from contract.config import AnalysisConfig
from contract.families import FAMILIES
from workers.cli_common import (
    DEMO_METRICS,
    ThreadsOption,
    console,
    err_console,
)
from workers.cli_common import (
    fail as _fail,
)
from workers.cli_service import register as register_service
from workers.outputs import (
    OutputPathError,
    check_file,
    check_folder,
    check_tree,
    save_or_fallback,
)

if TYPE_CHECKING:
    from analysis.result import AnalysisResult

app = typer.Typer(
    help="bottlelens: what happens to information inside your network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    app()


def _parse_json(text: str | None, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "pass e.g. '{\"key\": 1}'"
        raise _fail(f"{what} is not valid JSON ({exc}); {hint}") from exc
    if not isinstance(value, dict):
        raise _fail(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _check_outputs(
    outputs: dict[str, Path | None], folders: dict[str, Path | None]
) -> None:
    """Every file and folder the command will write, before any work; exit 2 else."""
    try:
        for option, path in outputs.items():
            if path is not None:
                check_file(path, option)
        for option, path in folders.items():
            if path is not None:
                check_folder(path, option)
    except OutputPathError as exc:
        raise _fail(str(exc)) from exc


def _picture_paths(plot: Path) -> dict[str, Path | None]:
    return {
        "--plot": plot,
        "--plot (information plane)": plot.with_suffix(".information.png"),
        "--plot (CKA)": plot.with_suffix(".cka.png"),
    }


def _run(
    *,
    arch: str,
    arch_config: dict[str, Any],
    weights: Path,
    data: str,
    config: dict[str, Any],
    allow_code_checkpoints: bool,
    artifacts: Path | None = None,
    threads: int | None = None,
) -> AnalysisResult:
    """Load, analyse with a progress bar; ``config`` is stored with the result."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from analysis import analyse, load_dataset, load_model
    from analysis.threads import set_threads

    set_threads(threads)

    model, ckpt = load_model(
        arch, arch_config, weights, allow_code_checkpoints=allow_code_checkpoints
    )
    for name, count in ckpt.nonfinite.items():
        err_console.print(f"[yellow]warning:[/] {name} holds {count} NaN/Inf values")
    dataset = load_dataset(data)
    model_info = ckpt.model_info(arch, arch_config, weights.name)
    if not err_console.is_terminal:  # a log or a pipe: a line per stage
        from workers.progress import StageLines

        lines = StageLines(lambda line: err_console.print(line, highlight=False))
        try:
            return analyse(
                model,
                dataset,
                config,
                model_info=model_info,
                progress=lines,
                artifacts_dir=artifacts,
            )
        finally:
            lines.close()
    with Progress(
        TextColumn("{task.description:<8}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        return analyse(
            model,
            dataset,
            config,
            model_info=model_info,
            progress=progress,
            artifacts_dir=artifacts,
        )


def _show(
    result: AnalysisResult,
    out: Path | None,
    plot: Path | None,
    report: Path | None = None,
    artifacts: Path | None = None,
) -> None:
    """Tables on the console; JSON to ``out``; pictures next to ``plot``.

    A result that cannot be written to ``out`` goes to a fallback file, named on the
    console, and the command exits 2 once the pictures are drawn.
    """
    from analysis.report import result_tables

    data = result.to_dict()
    title = (
        f"{data['model'].get('architecture', data['model']['class'])} on "
        f"{data['dataset'].get('spec', 'data')}: {data['provenance']['n_samples']} "
        f"samples, {data['provenance']['duration_s']:.1f} s on "
        f"{data['provenance']['device']}"
    )
    for shown in result_tables(data, title=title):
        console.print(shown)
    failed: list[str] = []
    if out is not None:
        written, error = save_or_fallback(result, out)
        if error is None:
            console.print(f"result written to {out}")
        else:
            failed.append(
                f"could not write {out} ({error}); the result is in {written}"
            )
    if plot is not None:
        try:
            _draw(data, plot)
        except OSError as exc:
            failed.append(f"could not draw the pictures next to {plot} ({exc})")
    if report is not None:
        from analysis.reporting import write_html

        try:
            console.print(f"report written to {write_html(data, report, artifacts)}")
        except OSError as exc:
            failed.append(f"could not write the report {report} ({exc})")
    if failed:
        raise _fail("; ".join(failed))


def _draw(data: dict[str, Any], plot: Path) -> None:
    from analysis.report import plot_information_plane, plot_profile

    drawn: list[Path | None] = [plot_profile(data, plot)]
    drawn.append(plot_information_plane(data, plot.with_suffix(".information.png")))
    if data["similarity"] and data["similarity"]["matrix"]:
        import torch

        from analysis.similarity import plot_cka

        sim = data["similarity"]
        matrix = torch.tensor(sim["matrix"])  # (L, L)
        drawn.append(plot_cka(sim["layers"], matrix, plot.with_suffix(".cka.png")))
    console.print("pictures: " + ", ".join(str(p) for p in drawn if p is not None))


# Options that are also analysis config keys: given on the command line they override
# --config; left out, the contract's defaults (shown in --help) apply.
_DEFAULTS = AnalysisConfig()


def _default(key: str) -> str:
    value = getattr(_DEFAULTS, key)
    return ",".join(value) if isinstance(value, tuple) else str(value)


@app.command()
def analyze(
    arch: Annotated[str, typer.Option(help="Architecture name in the registry.")],
    weights: Annotated[
        Path, typer.Option(help=".safetensors, or a .pt/.pth state dict.")
    ],
    data: Annotated[
        str,
        typer.Option(
            help="A .npz, .safetensors or .csv file; sklearn:digits; "
            "sklearn:breast_cancer; or a manifold of known dimension such as "
            "synthetic:sphere?d=5 (README)."
        ),
    ],
    arch_config: Annotated[
        str | None, typer.Option(help="Architecture config as a JSON object.")
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(help="Samples to analyse.", show_default=_default("samples")),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            help="auto, all, or globs (a,b*).", show_default=_default("layers")
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="auto, cpu or cuda.", show_default=_default("device")),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of every random choice.", show_default=_default("seed")
        ),
    ] = None,
    budget: Annotated[
        int | None,
        typer.Option(
            help="Wider layers are randomly projected to this width.",
            show_default=_default("budget"),
        ),
    ] = None,
    exact: Annotated[
        list[str] | None, typer.Option(help="Glob of layers kept at full width.")
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated families: {', '.join(FAMILIES)}.",
            show_default=_default("metrics"),
        ),
    ] = None,
    artifacts: Annotated[
        Path | None,
        typer.Option(help="Directory for attribution maps (.npy, .png)."),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            help='Further analysis config as JSON, e.g. \'{"id": {"params": '
            '{"mle": {"k": 10}}}}\' (docs/contract.md).'
        ),
    ] = None,
    allow_code_checkpoints: Annotated[
        bool,
        typer.Option(
            "--allow-code-checkpoints",
            help="Accept .pt2 programs (they can run code: trusted only).",
        ),
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Write the result JSON here.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Draw the layer profile as a PNG here.")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Write the HTML report here (self-contained, offline)."),
    ] = None,
    threads: ThreadsOption = None,
    timings: Annotated[
        bool,
        typer.Option(
            "--timings", help="Also show the seconds and memory of each stage."
        ),
    ] = False,
) -> None:
    """Analyse every layer of a model on a dataset and print a per-layer table.

    Options that are analysis config keys override --config only when given.
    """
    from analysis.config import parse_config
    from analysis.errors import BottlelensError

    cfg = _parse_json(config, "--config")
    flags = {
        "samples": samples,
        "layers": layers,
        "seed": seed,
        "budget": budget,
        "metrics": metrics,
        "device": device,
        "exact": exact or None,
    }
    cfg |= {key: value for key, value in flags.items() if value is not None}
    try:  # the API's check, before anything is loaded
        checked = parse_config(cfg)
    except BottlelensError as exc:
        raise _fail(_one_line(exc)) from exc
    if artifacts is None and "attribution" in checked.metrics:
        artifacts = (out or Path("result.json")).with_suffix(".artifacts")
        artifacts_option = "--artifacts (default, next to --out)"
    else:
        artifacts_option = "--artifacts"
    arch_cfg = _parse_json(arch_config, "--arch-config")
    if not weights.is_file():
        raise _fail(f"--weights {weights} is not a file")
    _check_outputs(
        {"--out": out, "--report": report, **(_picture_paths(plot) if plot else {})},
        {artifacts_option: artifacts},
    )
    if arch_config is None:
        _say_defaults(arch)
    try:
        result = _run(
            arch=arch,
            arch_config=arch_cfg,
            weights=weights,
            data=data,
            config=cfg,
            allow_code_checkpoints=allow_code_checkpoints,
            artifacts=artifacts,
            threads=threads,
        )
    except BottlelensError as exc:
        raise _fail(_one_line(exc)) from exc
    if timings:
        from analysis.report import timings_table

        console.print(timings_table(result.to_dict()))
    _show(result, out, plot, report, artifacts)


def _say_defaults(arch: str) -> None:
    """``--arch`` without ``--arch-config``: name the defaults that will be used."""
    from contract.architectures import BUILTIN_CONFIGS, config_keys

    if arch not in BUILTIN_CONFIGS:
        return
    defaults = {
        key: list(default) if isinstance(default, tuple) else default
        for key, (_, default) in config_keys(arch).items()
    }
    err_console.print(
        f"no --arch-config: {arch} with its defaults {json.dumps(defaults)} "
        "(the weights must have these shapes; `bottlelens architectures` lists "
        "every key)",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def report(
    result: Annotated[
        Path | None, typer.Argument(help="A result JSON (analyze --out).")
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The HTML file to write.")
    ] = Path("report.html"),
    artifacts: Annotated[
        Path | None,
        typer.Option(
            help="Folder of the attribution maps (default: RESULT's .artifacts "
            "folder, or the attribution folder beside it, when present)."
        ),
    ] = None,
    series: Annotated[
        str | None, typer.Option(help="A series id: its report, through the API.")
    ] = None,
    audit: Annotated[
        str | None, typer.Option(help="An audit id (with --run), through the API.")
    ] = None,
    run: Annotated[str | None, typer.Option(help="The audit's run id.")] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="--series: the dataset id (default: the newest analysed)."),
    ] = None,
) -> None:
    """Write the HTML report of a result, a series or an audit run.

    One file, readable offline and printable. A series or an audit run is fetched
    through BOTTLELENS_URL and BOTTLELENS_API_KEY.
    """
    from analysis.reporting import write_html
    from contract.result import upgrade_result

    _check_outputs({"--output": output}, {})
    if (result is not None) + (series is not None) + (audit is not None) != 1:
        raise _fail("give exactly one of RESULT, --series and --audit")
    if (audit is None) != (run is None):
        raise _fail("--audit and --run go together")
    if result is None:
        from analysis.reporting import write_page
        from workers import cli_remote, report_remote

        with cli_remote._api() as api:
            html = (
                report_remote.series_page(api, series, dataset)
                if series is not None
                else report_remote.audit_page(api, str(audit), str(run))
            )
        console.print(f"report written to {write_page(html, output)}")
        return
    try:
        data = upgrade_result(json.loads(result.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read the result {result}: {exc}") from exc
    if artifacts is None:
        beside = [result.with_suffix(".artifacts"), result.parent / "attribution"]
        artifacts = next((p for p in beside if p.is_dir()), None)
    console.print(f"report written to {write_html(data, output, artifacts)}")


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the demo model, result and picture go.")
    ] = Path(".bottlelens/demo"),
    samples: Annotated[int, typer.Option(help="Samples to analyse.")] = int(
        _DEFAULTS.samples or 0
    ),
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = _DEFAULTS.device,
    seed: Annotated[int, typer.Option(help="Seed of training and analysis.")] = 0,
    metrics: Annotated[
        str, typer.Option(help="Comma-separated: id, mi, probe, cka, attribution.")
    ] = DEMO_METRICS,
    threads: ThreadsOption = None,
) -> None:
    """Train a bottleneck MLP on sklearn:digits, save it, analyse it."""
    from analysis.demo import train_demo_model
    from analysis.errors import BottlelensError
    from analysis.threads import set_threads

    try:
        check_tree(workdir, "--workdir")
    except OutputPathError as exc:
        raise _fail(str(exc)) from exc
    set_threads(threads)
    console.print("training the demo model (64-128-64-8-64-10 MLP on sklearn:digits)")
    trained = train_demo_model(workdir, seed=seed)
    console.print(
        f"test accuracy {trained.test_accuracy:.3f}; weights saved to {trained.weights}"
    )
    try:
        result = _run(
            arch=trained.architecture,
            arch_config=trained.config,
            weights=trained.weights,
            data=trained.dataset,
            config={
                "samples": samples,
                "seed": seed,
                "metrics": metrics,
                "device": device,
            },
            allow_code_checkpoints=False,
            artifacts=workdir / "attribution",
            threads=threads,
        )
    except BottlelensError as exc:
        raise _fail(_one_line(exc)) from exc
    _show(
        result,
        workdir / "result.json",
        workdir / "profile.png",
        workdir / "report.html",
        workdir / "attribution",
    )


# --- the service: serve, keys, db, quickstart (workers/cli_service.py) ---------
register_service(app)

# --- a running service, through bottlelens.client (workers/cli_remote.py) ---
from workers.cli_audits import audits_app  # noqa: E402
from workers.cli_remote import (  # noqa: E402
    analyses_app,
    reports_app,
    results_app,
    series_app,
)

app.add_typer(analyses_app, name="analyses")
app.add_typer(results_app, name="results")
app.add_typer(series_app, name="series")
app.add_typer(audits_app, name="audits")
app.add_typer(reports_app)  # compare, export


if __name__ == "__main__":
    main()
