"""``analyse``: capture a model's layers on a dataset, find its bottlenecks, measure.

The one entry point shared by the CLI, the Celery worker and notebooks.
"""

from __future__ import annotations

import fnmatch
import hashlib
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.bottlenecks import find_bottlenecks
from analysis.capture import Capture, capture, profile
from analysis.config import AnalysisConfig
from analysis.datasets import Dataset
from analysis.errors import DataError, InvalidInputError
from analysis.intake import dry_run
from analysis.layer_metrics import (
    check_params,
    flat_input,
    id_rows,
    mi_rows,
    probe_rows,
)
from analysis.result import AnalysisResult, LayerResult
from analysis.types import Bottleneck, LayerInfo, MetricValue

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages: profile, capture, metrics."""

# Layers that keep the width and content of the layer before them are left out of
# "auto": they add rows, not information about where the representation changes.
_PASS_THROUGH = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
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

    Returns
    -------
    AnalysisResult
        Layers with their metric rows (``intrinsic_dimension``, ``mi_input``,
        ``mi_output``, ``probe_accuracy``, ``attribution_*``), bottlenecks, the CKA
        matrix under ``similarity``, attribution summaries and files, provenance.

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
    started = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    cfg = (
        config
        if isinstance(config, AnalysisConfig)
        else AnalysisConfig.from_dict(config)
    )
    dataset = data if isinstance(data, Dataset) else None
    x = data.x if isinstance(data, Dataset) else data
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise InvalidInputError(
            "data must be a Dataset or a tensor of shape (N, ...) with N samples"
        )
    check_params(cfg)
    if "attribution" in cfg.metrics and artifacts_dir is None:
        raise InvalidInputError(
            "attribution saves maps as files: pass artifacts_dir (CLI: --artifacts)"
        )
    dev = resolve_device(cfg.device if device is None else device)
    model = model.to(dev)
    report = progress or (lambda stage, done, total: None)

    indices = _sample_indices(len(x), cfg.samples, cfg.seed)
    xs = x[indices]  # (n, ...)
    ys = None if dataset is None or dataset.y is None else dataset.y[indices]
    dry_run(model, xs[:2].to(dev))

    report("profile", 0, 1)
    profile_layers = profile(model, xs[:2].to(dev))
    bottlenecks = find_bottlenecks(
        profile_layers, factor=cfg.bottleneck_factor, model=model
    )
    neck_layers = {b.layer for b in bottlenecks}
    names = select_layers(model, profile_layers, cfg.layers, neck_layers)
    report("profile", 1, 1)

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
    layers = _measure_layers(cap, xs.to(dev), ys, cfg, neck_layers, report)
    similarity = None
    if "cka" in cfg.metrics:
        report("cka", 0, 1)
        auto = set(select_layers(model, profile_layers, "auto", neck_layers))
        chosen = {
            n: a
            for n, a in cap.activations.items()
            if cfg.cka_layers == "all" or n in auto
        }
        similarity = _similarity(chosen, cfg)
        report("cka", 1, 1)
    del cap
    attribution: list[dict[str, Any]] = []
    if "attribution" in cfg.metrics and bottlenecks:
        assert artifacts_dir is not None
        report("attribution", 0, 1)
        attribution = _attribute(
            model, xs.to(dev), bottlenecks, artifacts_dir, cfg, layers
        )
        report("attribution", 1, 1)

    return AnalysisResult(
        model=_model_section(model, model_info),
        dataset=_dataset_section(x, dataset),
        config=cfg,
        layers=layers,
        bottlenecks=bottlenecks,
        similarity=similarity,
        attribution=attribution,
        provenance={
            "seed": cfg.seed,
            "n_samples": len(indices),
            "sample_indices_sha256": hashlib.sha256(
                indices.cpu().numpy().astype("<i8").tobytes()
            ).hexdigest(),
            "projection_seeds": {
                layer.name: layer.projection["seed"]
                for layer in layers
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
        },
    )


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
    model: nn.Module, layers: list[LayerInfo], spec: str, bottlenecks: set[str]
) -> list[str]:
    """Names of the records to capture, in execution order.

    ``"all"``: every module call. ``"auto"``: the bottlenecks, plus every call of a
    module that is a direct child of the model or of a container (``Sequential``,
    ``ModuleList``, ``ModuleDict``) reached from the model through containers only:
    the stages and blocks a reader names, not their insides (a block's own
    ``downsample`` Sequential does not count); containers themselves (their output
    is their last child's) and pass-through layers (normalisation, dropout,
    identity) are left out. Otherwise a comma-separated list of fnmatch globs; a
    glob matching nothing is an error.
    """
    if spec == "all":
        return [layer.name for layer in layers]
    modules = dict(model.named_modules())
    if spec == "auto":
        chosen = []
        for layer in layers:
            module = modules.get(layer.name.split("#")[0])
            outline = _in_outline(modules, layer.parent)
            skip = isinstance(module, _CONTAINERS + _PASS_THROUGH)
            if layer.name in bottlenecks or (outline and not skip):
                chosen.append(layer.name)
        return chosen
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


def _in_outline(modules: dict[str, nn.Module], parent: str) -> bool:
    """True when ``parent`` is the model, or a container whose ancestors up to the
    model are all containers."""
    while parent:
        if not isinstance(modules.get(parent), _CONTAINERS):
            return False
        parent = parent.rpartition(".")[0]
    return True


def _sample_indices(n: int, samples: int | None, seed: int) -> torch.Tensor:
    if samples is None or samples >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:samples].sort().values


def _measure_layers(
    cap: Capture,
    xs: torch.Tensor,
    ys: torch.Tensor | None,
    cfg: AnalysisConfig,
    neck_layers: set[str],
    report: Progress,
) -> list[LayerResult]:
    x_flat, input_note = (
        flat_input(xs, cfg) if "mi" in cfg.metrics else (xs, None)
    )  # (n, <= budget)
    y = None if ys is None else ys.to(xs.device)
    layers = []
    report("metrics", 0, len(cap.layers))
    for done, info in enumerate(cap.layers, start=1):
        acts = cap.activations[info.name]  # (n, stored_width)
        metrics: list[MetricValue] = []
        if "id" in cfg.metrics:
            metrics += id_rows(acts, cfg)
        if "mi" in cfg.metrics:
            metrics += mi_rows(acts, x_flat, y, cfg, input_note)
        if "probe" in cfg.metrics:
            metrics += probe_rows(acts, y, cfg)
        layers.append(_layer_result(info, info.name in neck_layers, metrics))
        report("metrics", done, len(cap.layers))
    return layers


def _similarity(
    activations: dict[str, torch.Tensor], cfg: AnalysisConfig
) -> dict[str, Any]:
    from analysis.similarity import cka_matrix

    batch_size = max(4, cfg.batch_size)  # the unbiased HSIC needs 4 rows a batch
    section: dict[str, Any] = {
        "method": "linear_cka_minibatch",
        "batch_size": batch_size,
        "layers": list(activations),
        "matrix": None,
        "reason": None,
    }
    try:
        names, matrix = cka_matrix(activations, batch_size=batch_size, seed=cfg.seed)
    except DataError as exc:
        section["reason"] = str(exc)
        return section
    section["layers"] = names
    section["matrix"] = [[float(v) for v in row] for row in matrix.tolist()]
    return section


def _attribute(
    model: nn.Module,
    xs: torch.Tensor,
    bottlenecks: list[Bottleneck],
    artifacts_dir: str | Path,
    cfg: AnalysisConfig,
    layers: list[LayerResult],
) -> list[dict[str, Any]]:
    """Captum at every bottleneck; the summaries also join their layer's rows."""
    from analysis.attribution import attribute_bottlenecks

    reports = attribute_bottlenecks(
        model,
        xs,
        bottlenecks,
        artifacts_dir,
        target=cfg.attribution_target,
        n_maps=cfg.attribution_maps,
        seed=cfg.seed,
        n_steps=cfg.attribution_steps,
    )
    by_name = {layer.name: layer for layer in layers}
    for entry in reports:
        if entry["layer"] in by_name:
            by_name[entry["layer"]].metrics += entry["metrics"]
        entry["metrics"] = [asdict(m) for m in entry["metrics"]]
    return reports


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
