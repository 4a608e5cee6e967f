"""The ``bottlelens`` command line.

Commands import what they need when they run, so ``bottlelens --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from analysis.result import AnalysisResult

app = typer.Typer(
    help="bottlelens: what happens to information inside your network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output gets room for the whole table instead of rich's default 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)


def main() -> None:
    app()


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)


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


def _run(
    *,
    arch: str,
    arch_config: dict[str, Any],
    weights: Path,
    data: str,
    config: dict[str, Any],
    device: str,
    allow_code_checkpoints: bool,
) -> AnalysisResult:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from analysis import analyse, load_dataset, load_model

    model, ckpt = load_model(
        arch, arch_config, weights, allow_code_checkpoints=allow_code_checkpoints
    )
    for name, count in ckpt.nonfinite.items():
        err_console.print(f"[yellow]warning:[/] {name} holds {count} NaN/Inf values")
    dataset = load_dataset(data)
    model_info = {
        "architecture": arch,
        "architecture_config": arch_config,
        "sha256": ckpt.sha256,
        "format": ckpt.format,
        "size": ckpt.size,
        "file": weights.name,
    }
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
            device=device,
            model_info=model_info,
            progress=progress,
        )


def _show(result: AnalysisResult, out: Path | None, plot: Path | None) -> None:
    from analysis.report import bottleneck_table, layer_table, plot_profile

    data = result.to_dict()
    title = (
        f"{data['model'].get('architecture', data['model']['class'])} on "
        f"{data['dataset'].get('spec', 'data')}: {data['provenance']['n_samples']} "
        f"samples, {data['provenance']['duration_s']:.1f} s on "
        f"{data['provenance']['device']}"
    )
    console.print(layer_table(data, title=title))
    if data["bottlenecks"]:
        console.print(bottleneck_table(data))
    else:
        console.print("no bottleneck found (no layer narrows by the factor and widens)")
    if out is not None:
        result.save(out)
        console.print(f"result written to {out}")
    if plot is not None:
        plot_profile(data, plot)
        console.print(f"layer profile drawn in {plot}")


@app.command()
def analyze(
    arch: Annotated[str, typer.Option(help="Architecture name in the registry.")],
    weights: Annotated[
        Path, typer.Option(help=".safetensors, or a .pt/.pth state dict.")
    ],
    data: Annotated[
        str,
        typer.Option(
            help="A .npz/.safetensors/.csv file, sklearn:digits, "
            "sklearn:breast_cancer or synthetic:<manifold>?d=..&D=..&n=.."
        ),
    ],
    arch_config: Annotated[
        str | None, typer.Option(help="Architecture config as a JSON object.")
    ] = None,
    samples: Annotated[int | None, typer.Option(help="Samples to analyse.")] = 1000,
    layers: Annotated[str, typer.Option(help="auto, all, or globs (a,b*).")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    budget: Annotated[
        int, typer.Option(help="Wider layers are randomly projected to this width.")
    ] = 4096,
    exact: Annotated[
        list[str] | None, typer.Option(help="Glob of layers kept at full width.")
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(help="Further analysis config as JSON (e.g. id_params)."),
    ] = None,
    allow_code_checkpoints: Annotated[
        bool,
        typer.Option(help="Accept .pt2 programs (they can run code: trusted only)."),
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Write the result JSON here.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Draw the layer profile as a PNG here.")
    ] = None,
) -> None:
    """Analyse every layer of a model on a dataset and print a per-layer table."""
    from analysis.errors import BottlelensError

    cfg = _parse_json(config, "--config")
    cfg.update(samples=samples, layers=layers, seed=seed, budget=budget)
    if exact:
        cfg["exact"] = exact
    if not weights.is_file():
        raise _fail(f"--weights {weights} is not a file")
    try:
        result = _run(
            arch=arch,
            arch_config=_parse_json(arch_config, "--arch-config"),
            weights=weights,
            data=data,
            config=cfg,
            device=device,
            allow_code_checkpoints=allow_code_checkpoints,
        )
    except BottlelensError as exc:
        raise _fail(str(exc)) from exc
    _show(result, out, plot)


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the demo model, result and picture go.")
    ] = Path(".bottlelens/demo"),
    samples: Annotated[int, typer.Option(help="Samples to analyse.")] = 1000,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of training and analysis.")] = 0,
) -> None:
    """Train a bottleneck MLP on sklearn:digits, save it, analyse it."""
    from analysis.demo import train_demo_model

    console.print("training the demo model (64-128-64-8-64-10 MLP on sklearn:digits)")
    trained = train_demo_model(workdir, seed=seed)
    console.print(
        f"test accuracy {trained.test_accuracy:.3f}; weights saved to {trained.weights}"
    )
    result = _run(
        arch=trained.architecture,
        arch_config=trained.config,
        weights=trained.weights,
        data=trained.dataset,
        config={"samples": samples, "seed": seed},
        device=device,
        allow_code_checkpoints=False,
    )
    _show(result, workdir / "result.json", workdir / "profile.png")


if __name__ == "__main__":
    main()
