"""``analyse``: capture a model's layers on a dataset, find its bottlenecks, measure.

The one entry point shared by the CLI, the Celery worker and notebooks.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import logging
import platform
import resource
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.bottlenecks import find_bottlenecks, is_container
from analysis.capture import capture, profile
from analysis.config import AnalysisConfig, parse_config
from analysis.datasets import Dataset
from analysis.errors import BottlelensError, InvalidInputError
from analysis.families import REGISTRY, Context, Family
from analysis.intake import dry_run
from analysis.result import AnalysisResult, LayerResult
from analysis.threads import ensure_threads
from analysis.types import LayerInfo, MetricValue
from contract.families import FAMILIES

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages: profile, capture, metrics, then the
name of each family with a section (cka, attribution)."""

# Layers that keep the width and content of the layer before them are left out of
# "auto": they add rows, not information about where the representation changes.
_PASS_THROUGH = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
)
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
    timer = _Timer(dev)

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
    _measure_layers(ctx, families, neck_layers, report, warnings, timer, fatal)
    sections = _sections(ctx, families, report, warnings, timer, fatal)
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


def select_layers(
    model: nn.Module,
    layers: list[LayerInfo],
    spec: str,
    bottlenecks: set[str],
    factor: float = 2.0,
) -> list[str]:
    """Names of the records to capture, in execution order.

    ``"all"``: every module call. ``"auto"``: the bottlenecks, plus every call of a
    module that is a direct child of the model or of a container reached from the
    model through containers only: the stages and blocks a reader names, not their
    insides (a block's own ``downsample`` Sequential does not count). A container
    is a ``Sequential``, ``ModuleList`` or ``ModuleDict``, or a module whose
    children are each called once, in order, each on the previous one's output,
    and whose output is its last child's (``analysis.bottlenecks.is_container``: a
    transformer's ``encoder`` holding its blocks and a final norm). Containers
    themselves (their output is their last child's) and pass-through layers
    (normalisation, dropout, identity) are left out. Around each bottleneck "auto"
    also takes the nearest call before and after it that is at least ``factor``
    times wider (what enters and leaves the neck: a transformer MLP's hidden
    layer lies inside its block). Otherwise a comma-separated list of fnmatch
    globs; a glob matching nothing is an error.
    """
    if spec == "all":
        return [layer.name for layer in layers]
    modules = dict(model.named_modules())
    if spec == "auto":
        chosen = []
        containers: dict[str, bool] = {}
        for layer in layers:
            module = modules.get(layer.name.split("#")[0])
            outline = _in_outline(modules, layer.parent, containers)
            skip = isinstance(module, _PASS_THROUGH) or (
                module is not None
                and _container(modules, layer.name.split("#")[0], containers)
            )
            if layer.name in bottlenecks or (outline and not skip):
                chosen.append(layer.name)
        around = _neck_neighbours(layers, bottlenecks, factor)
        return [x.name for x in layers if x.name in around or x.name in chosen]
    globs = [g.strip() for g in spec.split(",") if g.strip()]
    unmatched = [
        g for g in globs if not any(fnmatch.fnmatchcase(x.name, g) for x in layers)
    ]
    if unmatched:
        sample = ", ".join(layer.name for layer in layers[:12])
        raise InvalidInputError(
            f"layer patterns {unmatched} match no layer; layers are named like: "
            f"{sample}{', ...' if len(layers) > 12 else ''}"
        )
    return [
        layer.name
        for layer in layers
        if any(fnmatch.fnmatchcase(layer.name, g) for g in globs)
    ]


def _neck_neighbours(
    layers: list[LayerInfo], bottlenecks: set[str], factor: float
) -> set[str]:
    """For each bottleneck, the nearest call before and after it whose width is at
    least ``factor`` times the neck's."""
    found: set[str] = set()
    for i, layer in enumerate(layers):
        if layer.name not in bottlenecks:
            continue
        wide = [x.width >= factor * layer.width for x in layers]
        before = [j for j in range(i) if wide[j]]
        after = [j for j in range(i + 1, len(layers)) if wide[j]]
        found |= {layers[j].name for j in (before[-1:] + after[:1])}
    return found


def _in_outline(
    modules: dict[str, nn.Module], parent: str, containers: dict[str, bool]
) -> bool:
    """True when ``parent`` is the model, or a container whose ancestors up to the
    model are all containers."""
    while parent:
        if not _container(modules, parent, containers):
            return False
        parent = parent.rpartition(".")[0]
    return True


def _container(
    modules: dict[str, nn.Module], name: str, containers: dict[str, bool]
) -> bool:
    if name not in containers:
        module = modules.get(name)
        containers[name] = module is not None and is_container(module)
    return containers[name]


def _reconstructs(output: Any, xs: torch.Tensor) -> bool:
    """The model's output has its input's size per sample (an autoencoder)."""
    return isinstance(output, torch.Tensor) and output[0].numel() == xs[0].numel()


def _sample_indices(n: int, samples: int | None, seed: int) -> torch.Tensor:
    if samples is None or samples >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:samples].sort().values


def _measure_layers(
    ctx: Context,
    families: list[Family],
    neck_layers: set[str],
    report: Progress,
    warnings: list[str],
    timer: _Timer,
    fatal: tuple[type[BaseException], ...],
) -> None:
    """Every per-layer family on every captured layer, into ``ctx.layers``.

    A family that fails on a layer leaves that layer's other rows in place; its
    own rows there are ``null`` with the reason, and a warning names it.
    """
    report("metrics", 0, len(ctx.layer_infos))
    measured: dict[tuple[int, ...], list[tuple[str, torch.Tensor]]] = {}
    for done, info in enumerate(ctx.layer_infos, start=1):
        acts = ctx.activations[info.name]  # (n, stored_width)
        twin = _identical_to(acts, measured)
        if twin is not None:
            metrics = _copied_rows(ctx, twin)
        else:
            measured.setdefault(tuple(acts.shape), []).append((info.name, acts))
            metrics = []
            for family in families:
                with timer(family.name, info.name):
                    try:
                        metrics += family.layer_rows(ctx, info, acts)
                    except fatal:
                        raise
                    except Exception as exc:
                        reason = _failure(exc)
                        warnings.append(
                            f"{family.name} failed on {info.name}: {reason}"
                        )
                        metrics += family.void_rows(ctx, reason)
        ctx.layers.append(_layer_result(info, info.name in neck_layers, metrics))
        report("metrics", done, len(ctx.layer_infos))


def _identical_to(
    acts: torch.Tensor, measured: dict[tuple[int, ...], list[tuple[str, torch.Tensor]]]
) -> str | None:
    """The earlier layer whose stored activations equal ``acts`` exactly (an
    identity, a dropout in eval, an in-place activation captured twice), if any."""
    for name, other in measured.get(tuple(acts.shape), []):
        if torch.equal(acts, other):
            return name
    return None


def _copied_rows(ctx: Context, twin: str) -> list[MetricValue]:
    """The rows of layer ``twin``, for a layer whose outputs equal its: measured
    once, each copy flagged ``identical`` with ``params["identical_to"]``."""
    source = next(layer for layer in ctx.layers if layer.name == twin)
    rows = []
    for row in source.metrics:
        copy = row.model_copy(deep=True)
        copy.params["identical_to"] = twin
        copy.flags = [*copy.flags, "identical"]
        rows.append(copy)
    return rows


def _sections(
    ctx: Context,
    families: list[Family],
    report: Progress,
    warnings: list[str],
    timer: _Timer,
    fatal: tuple[type[BaseException], ...],
) -> dict[str, Any]:
    """The families' own sections, each after the families it reads (``after``);
    a failure keeps the rest and says why."""
    sections = ctx.sections
    for family in _after_order(families):
        key = family.spec.section
        if key is None:
            continue
        report(family.name, 0, 1)
        with timer(family.name):
            try:
                sections[key] = family.section(ctx)
            except fatal:
                raise
            except Exception as exc:
                reason = _failure(exc)
                warnings.append(f"{family.name} failed: {reason}")
                sections[key] = family.void_section(reason)
        report(family.name, 1, 1)
    return sections


def _after_order(families: list[Family]) -> list[Family]:
    """``families`` in their order, except that each comes after those named in
    its spec's ``after`` (a stable topological order; ``after`` has no cycles)."""
    pending, done = list(families), []
    while pending:
        ready = next(
            f
            for f in pending
            if not any(g.name in f.spec.after for g in pending if g is not f)
        )
        pending.remove(ready)
        done.append(ready)
    return done


def _failure(exc: Exception) -> str:
    """A failure as a row's reason: the library's own message, or the type."""
    if isinstance(exc, BottlelensError):
        return str(exc)
    log.warning("a metric family failed", exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


class _Timer:
    """Seconds spent per stage, summed over its calls, per layer within a family,
    and the memory high-water mark at the end of each stage (the process's
    resident set; on CUDA also the most the device held during the stage)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.layers: dict[str, dict[str, float]] = {}
        self.peaks_mb: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str, layer: str | None = None) -> Iterator[None]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + spent, 4)
            if layer is not None:
                per = self.layers.setdefault(stage, {})
                per[layer] = round(per.get(layer, 0.0) + spent, 4)
            peak = self.peaks_mb.setdefault(stage, {})
            peak["rss"] = _rss_high_water_mb()
            if cuda:
                used = torch.cuda.max_memory_allocated(self.device) / 2**20
                peak["cuda"] = round(max(peak.get("cuda", 0.0), used), 1)

    def provenance(self) -> dict[str, Any]:
        return {
            "timings_s": self.seconds,
            "layer_timings_s": self.layers,
            "memory_peaks_mb": self.peaks_mb,
        }


def _rss_high_water_mb() -> float:
    """The process's peak resident set so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if platform.system() == "Darwin" else 2**10), 1)


def _layer_result(
    info: LayerInfo, is_bottleneck: bool, metrics: list[MetricValue]
) -> LayerResult:
    return LayerResult(
        name=info.name,
        index=info.index,
        module=info.module,
        shape=list(info.shape),
        width=info.width,
        is_bottleneck=is_bottleneck,
        projected_to=info.projected_to,
        projection=info.projection,
        metrics=metrics,
    )


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
