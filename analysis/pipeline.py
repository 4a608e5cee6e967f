"""``analyse``: capture a model's layers on a dataset, find its bottlenecks, measure.

The one entry point shared by the CLI, the Celery worker and notebooks.
"""

from __future__ import annotations

import hashlib
import platform
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.bottlenecks import find_bottlenecks
from analysis.capture import capture, profile
from analysis.config import AnalysisConfig, parse_config
from analysis.datasets import Dataset
from analysis.errors import InvalidInputError
from analysis.families import REGISTRY, Context
from analysis.intake import dry_run
from analysis.layer_selection import select_layers
from analysis.measuring import Progress, measure_layers, measure_sections
from analysis.memory import pages_kept
from analysis.result import AnalysisResult
from analysis.threads import ensure_threads
from analysis.timing import StageTimer
from contract.families import FAMILIES

_PROVENANCE_PACKAGES = ("bottlelens", "torch", "numpy", "scikit-learn", "safetensors")


def analyse(
    model: nn.Module,
    data: Dataset | torch.Tensor,
    config: AnalysisConfig | dict[str, Any] | None = None,
    *,
    device: str | torch.device | None = None,
    model_info: dict[str, Any] | None = None,
    progress: Progress | None = None,
    artifacts_dir: str | Path | None = None,
    fatal: tuple[type[BaseException], ...] = (),
) -> AnalysisResult:
    """Measure every selected layer of ``model`` on ``data``.

    Parameters
    ----------
    model:
        Any ``nn.Module``; it is run in eval mode under ``no_grad`` and left in the
        mode it had.
    data:
        A ``Dataset`` from ``analysis.load_dataset`` or a tensor (N, ...) of inputs.
    config:
        ``AnalysisConfig`` or a dict of its fields; stored in the result.
    device:
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or a torch device;
        ``None`` takes ``config.device``.
    model_info:
        What the result's ``model`` section should say about where the model came
        from (architecture, config, sha256, format); merged with what is measured.
    progress:
        Called as ``progress(stage, done, total)`` while the work goes on.
    artifacts_dir:
        Where attribution maps (``.npy`` and ``.png``) are written; needed only when
        ``config.metrics`` holds ``"attribution"``. The result holds paths relative
        to it.
    fatal:
        Exception types that must end the run even inside a family (a time limit,
        a cancellation); any other failure of a family becomes ``null`` rows with
        the reason and a warning, and every other row stays.

    Returns
    -------
    AnalysisResult
        Layers with their metric rows (``intrinsic_dimension``, ``mi_input``,
        ``mi_output``, ``probe_accuracy``, ``attribution_*``), bottlenecks, the
        families' sections (CKA under ``similarity``, attribution summaries and
        files), warnings, provenance with per-stage ``timings_s``. The stored
        config is what ran: ``samples`` clipped to the data, families that could
        not run here left out (each change a warning).

    Example
    -------
    >>> from analysis import analyse, build_model, load_dataset
    >>> ds = load_dataset("sklearn:digits")
    >>> net = build_model("mlp", {"in_features": 64, "widths": [64, 8, 64],
    ...                           "out_features": 10})
    >>> result = analyse(net, ds, {"samples": 500})
    >>> result.bottlenecks[0].layer
    'fc1'
    """
    ensure_threads()  # one thread policy, unless the caller set its own
    with pages_kept():  # freed buffers reused, not faulted in again
        return _analyse(
            model, data, config, device, model_info, progress, artifacts_dir, fatal
        )


def _analyse(
    model: nn.Module,
    data: Dataset | torch.Tensor,
    config: AnalysisConfig | dict[str, Any] | None,
    device: str | torch.device | None,
    model_info: dict[str, Any] | None,
    progress: Progress | None,
    artifacts_dir: str | Path | None,
    fatal: tuple[type[BaseException], ...],
) -> AnalysisResult:
    started = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    cfg = parse_config(config)
    dataset = data if isinstance(data, Dataset) else None
    x = data.x if isinstance(data, Dataset) else data
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise InvalidInputError(
            "data must be a Dataset or a tensor of shape (N, ...) with N samples"
        )
    y = None if dataset is None else dataset.y
    warnings: list[str] = []
    cfg = _fit_to_data(cfg, len(x), y, artifacts_dir, warnings)
    dev = resolve_device(cfg.device if device is None else device)
    model = model.to(dev)
    report = progress or (lambda stage, done, total: None)
    timer = StageTimer(dev)

    indices = _sample_indices(len(x), cfg.samples, cfg.seed)
    xs = x[indices]  # (n, ...)
    ys = None if y is None else y[indices]
    output = dry_run(model, xs[:2].to(dev))
    families = [REGISTRY[name] for name in cfg.metrics]
    for family in families:
        family.check(cfg, ys, output)

    with timer("profile"):
        report("profile", 0, 1)
        profile_layers = profile(model, xs[:2].to(dev))
        bottlenecks = find_bottlenecks(
            profile_layers,
            factor=cfg.bottleneck_factor,
            model=model,
            reconstructs=_reconstructs(output, xs),
        )
        neck_layers = {b.layer for b in bottlenecks}
        factor = cfg.bottleneck_factor
        names = select_layers(model, profile_layers, cfg.layers, neck_layers, factor)
        auto = set(select_layers(model, profile_layers, "auto", neck_layers, factor))
        report("profile", 1, 1)

    with timer("capture"):
        cap = capture(
            model,
            xs,
            names=names,
            batch_size=cfg.batch_size,
            budget=cfg.budget,
            exact=cfg.exact,
            seed=cfg.seed,
            device=dev,
            progress=lambda done, total: report("capture", done, total),
        )
    ctx = Context(
        model=model,
        xs=xs.to(dev),
        ys=None if ys is None else ys.to(dev),
        config=cfg,
        layer_infos=cap.layers,
        activations=cap.activations,
        bottlenecks=bottlenecks,
        auto_layers=auto,
        artifacts_dir=None if artifacts_dir is None else Path(artifacts_dir),
        data_x=x,
        data_y=y,
    )
    measure_layers(ctx, families, neck_layers, report, warnings, timer, fatal)
    sections = measure_sections(ctx, families, report, warnings, timer, fatal)
    ctx.activations.clear()  # the captures are the largest thing held; done
    del cap

    return AnalysisResult(
        model=_model_section(model, model_info),
        dataset=_dataset_section(x, dataset),
        config=cfg,
        layers=ctx.layers,
        bottlenecks=bottlenecks,
        warnings=warnings,
        sections=sections,
        provenance={
            "seed": cfg.seed,
            "n_samples": len(indices),
            "sample_indices_sha256": hashlib.sha256(
                indices.cpu().numpy().astype("<i8").tobytes()
            ).hexdigest(),
            "projection_seeds": {
                layer.name: layer.projection["seed"]
                for layer in ctx.layers
                if layer.projection and "seed" in layer.projection
            },
            "input_dtype": str(x.dtype).removeprefix("torch."),
            "model_dtype": _param_dtype(model),
            "activation_dtype": "float32",
            "device": str(dev),
            "device_name": _device_name(dev),
            "versions": _versions(),
            "python": platform.python_version(),
            "started_at": started_at,
            "duration_s": round(time.perf_counter() - started, 3),
            **timer.provenance(),
        },
    )


def _fit_to_data(
    cfg: AnalysisConfig,
    n: int,
    y: torch.Tensor | None,
    artifacts_dir: str | Path | None,
    warnings: list[str],
) -> AnalysisConfig:
    """The config actually run on this data: ``samples`` clipped to the dataset,
    families that cannot run here dropped, each change a warning. A family that
    needs an artifacts folder without one is the caller's error, raised first."""
    for name in cfg.metrics:
        if FAMILIES[name].needs_artifacts and artifacts_dir is None:
            raise InvalidInputError(
                f"{name} saves files: pass artifacts_dir (CLI: --artifacts)"
            )
    changes: dict[str, Any] = {}
    if cfg.samples is not None and cfg.samples > n:
        warnings.append(
            f"samples: {cfg.samples} asked for, the dataset has {n}; all {n} were "
            "analysed"
        )
        changes["samples"] = n
    used = min(n, cfg.samples or n)
    classes = y is not None and not y.is_floating_point()
    kept = []
    for name in cfg.metrics:
        spec = FAMILIES[name]
        if spec.needs_labels == "class" and not classes:
            what = "has no labels" if y is None else "has no class labels"
            warnings.append(f"{name}: not run, the dataset {what}")
        elif used < spec.min_samples:
            warnings.append(
                f"{name}: not run, {used} samples; it needs at least {spec.min_samples}"
            )
        else:
            if spec.needs_labels == "optional" and y is None:
                warnings.append(
                    f"{name}: the dataset has no labels; only the rows that need "
                    "none were measured"
                )
            kept.append(name)
    if tuple(kept) != cfg.metrics:
        changes["metrics"] = tuple(kept)
    return cfg.with_changes(**changes) if changes else cfg


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; a named CUDA must exist."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(
            f"device {device!r} was asked for but CUDA is not available here; "
            "use --device cpu or auto"
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise InvalidInputError(f"device must be auto, cpu or cuda (got {device!r})")
    return torch.device(device)


def _reconstructs(output: Any, xs: torch.Tensor) -> bool:
    """The model's output has its input's size per sample (an autoencoder)."""
    return isinstance(output, torch.Tensor) and output[0].numel() == xs[0].numel()


def _sample_indices(n: int, samples: int | None, seed: int) -> torch.Tensor:
    if samples is None or samples >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:samples].sort().values


def _model_section(model: nn.Module, info: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "class": type(model).__name__,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        **(info or {}),
    }


def _dataset_section(x: torch.Tensor, dataset: Dataset | None) -> dict[str, Any]:
    section: dict[str, Any] = {
        "n_samples": len(x),
        "sample_shape": list(x.shape[1:]),
        "dtype": str(x.dtype).removeprefix("torch."),
    }
    if dataset is None:
        return section
    return {
        "spec": dataset.spec,
        "name": dataset.name,
        "sha256": dataset.sha256,
        "has_labels": dataset.y is not None,
        **section,
        "meta": dataset.meta,
    }


def _param_dtype(model: nn.Module) -> str | None:
    p = next(iter(model.parameters()), None)
    return None if p is None else str(p.dtype).removeprefix("torch.")


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in _PROVENANCE_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out
