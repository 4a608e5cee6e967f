"""The frozen, versioned analysis configuration stored with every result.

Numerical hyperparameters live here, not in service settings: a result is only
comparable with another when their configs are equal, so the config travels with it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from analysis.errors import InvalidInputError

CONFIG_VERSION = 1

ID_METHODS = ("twonn", "mle", "pca90", "participation_ratio")
MI_METHODS = ("ksg", "gaussian", "binning", "noisy", "infonce", "probe")
ATTRIBUTION_METHODS = ("conductance", "integrated_gradients")
KNOWN_METRICS = ("id", "mi", "probe", "cka", "attribution")


@dataclass(frozen=True)
class AnalysisConfig:
    """What to measure and how; every field has a default.

    ``samples``: how many samples to analyse (a seeded subset when the dataset is
    larger; ``None`` = all). ``layers``: ``"auto"`` (bottlenecks, block outputs and
    the model output), ``"all"`` (every module call) or a comma-separated list of
    fnmatch globs over layer names. ``budget``: widest width kept as is; wider layers
    are randomly projected to it. ``exact``: globs of layers kept at full width.
    ``id_methods``: intrinsic-dimension estimators. ``id_params``: per-method keyword
    parameters, e.g. ``{"mle": {"k": 10}}``. ``bottleneck_factor``: how much narrower
    a bottleneck is than what comes before and after it. ``device``: ``"auto"``
    (CUDA when available), ``"cpu"`` or ``"cuda"``; the service sends an analysis
    to its CPU queue when this is ``"cpu"``.

    ``metrics`` picks the families: ``id`` (intrinsic dimension), ``mi`` (I(X;T) as
    ``mi_input`` and I(T;Y) as ``mi_output`` for each of ``mi_methods``, with
    ``mi_params`` per method; KSG reduces a side wider than ``mi_max_dim`` by PCA),
    ``probe`` (``probe_accuracy`` with ``probe_cv`` folds, when labels exist),
    ``cka`` (linear CKA between captured layers: with ``cka_layers="auto"`` the
    blocks, stages and bottlenecks among them, with ``"all"`` every captured layer),
    ``attribution`` (Captum at every bottleneck; ``attribution_target`` is ``None``
    for the predicted class, an output index, ``"reconstruction"`` for
    autoencoders, or ``"auto"`` (reconstruction when the output has the input's
    shape, else the predicted class); ``attribution_maps`` seeded samples get
    saved maps; ``attribution_steps`` integration steps).
    """

    version: int = CONFIG_VERSION
    metrics: tuple[str, ...] = ("id",)
    samples: int | None = 1000
    layers: str = "auto"
    budget: int = 4096
    exact: tuple[str, ...] = ()
    id_methods: tuple[str, ...] = ID_METHODS
    id_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    mi_methods: tuple[str, ...] = ("ksg", "gaussian", "binning", "probe")
    mi_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    mi_max_dim: int = 16
    probe_cv: int = 5
    cka_layers: str = "auto"
    attribution_target: int | str | None = None
    attribution_maps: int = 16
    attribution_steps: int = 32
    bottleneck_factor: float = 2.0
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        problems = _type_problems(self)
        if problems:
            raise InvalidInputError("invalid analysis config: " + "; ".join(problems))
        if self.version != CONFIG_VERSION:
            problems.append(
                f"version {self.version} is not supported; use {CONFIG_VERSION}"
            )
        for m in self.metrics:
            if m not in KNOWN_METRICS:
                problems.append(f"unknown metric {m!r}; choose from {KNOWN_METRICS}")
        for m in self.id_methods:
            if m not in ID_METHODS:
                problems.append(f"unknown id method {m!r}; choose from {ID_METHODS}")
        for m in self.id_params:
            if m not in ID_METHODS:
                problems.append(f"id_params names unknown method {m!r}")
        for m in self.mi_methods:
            if m not in MI_METHODS:
                problems.append(f"unknown mi method {m!r}; choose from {MI_METHODS}")
        for m in self.mi_params:
            if m not in MI_METHODS:
                problems.append(f"mi_params names unknown method {m!r}")
        if self.mi_max_dim < 1:
            problems.append(f"mi_max_dim must be positive (got {self.mi_max_dim})")
        if self.probe_cv < 2:
            problems.append(f"probe_cv must be at least 2 (got {self.probe_cv})")
        if self.cka_layers not in ("auto", "all"):
            problems.append(f'cka_layers must be "auto" or "all" ({self.cka_layers!r})')
        target = self.attribution_target
        if isinstance(target, str) and target not in ("reconstruction", "auto"):
            problems.append(
                "attribution_target must be null (predicted class), an output index, "
                f'"reconstruction" or "auto" (got {target!r})'
            )
        if self.attribution_maps < 1 or self.attribution_steps < 2:
            problems.append("attribution_maps must be >= 1 and attribution_steps >= 2")
        if self.samples is not None and self.samples < 3:
            problems.append(f"samples must be at least 3 (got {self.samples})")
        if self.budget < 2:
            problems.append(f"budget must be at least 2 (got {self.budget})")
        if self.batch_size < 1:
            problems.append(f"batch_size must be positive (got {self.batch_size})")
        if self.bottleneck_factor <= 1:
            problems.append(
                f"bottleneck_factor must be > 1 (got {self.bottleneck_factor})"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f'device must be "auto", "cpu" or "cuda" ({self.device!r})')
        if not self.layers.strip():
            problems.append('layers must be "auto", "all" or globs')
        if problems:
            raise InvalidInputError("invalid analysis config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> AnalysisConfig:
        """Build from JSON-like data, rejecting unknown keys by name."""
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidInputError(
                f"unknown config keys {unknown}; accepted keys: {sorted(names)}"
            )
        for key in _TUPLES:
            if key in data:
                value = data[key]
                if isinstance(value, str):
                    value = [v.strip() for v in value.split(",") if v.strip()]
                if not isinstance(value, list | tuple):
                    raise InvalidInputError(f"config key {key!r} must be a list")
                data[key] = tuple(value)
        try:
            return cls(**data)
        except TypeError as exc:  # pragma: no cover - defensive
            raise InvalidInputError(f"invalid analysis config: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in _TUPLES:
            out[key] = list(out[key])
        return out


_TUPLES = ("metrics", "exact", "id_methods", "mi_methods")
_TYPES: dict[str, tuple[type, ...]] = {
    "version": (int,),
    "samples": (int, type(None)),
    "layers": (str,),
    "budget": (int,),
    "bottleneck_factor": (int, float),
    "batch_size": (int,),
    "seed": (int,),
    "device": (str,),
    "id_params": (dict,),
    "mi_params": (dict,),
    "mi_max_dim": (int,),
    "probe_cv": (int,),
    "cka_layers": (str,),
    "attribution_target": (int, str, type(None)),
    "attribution_maps": (int,),
    "attribution_steps": (int,),
}


def _type_problems(cfg: AnalysisConfig) -> list[str]:
    problems = []
    for name, types in _TYPES.items():
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join(
                "null" if t is type(None) else t.__name__ for t in types
            )
            problems.append(f"{name} must be {expected} (got {value!r})")
    for name in _TUPLES:
        if not all(isinstance(v, str) for v in getattr(cfg, name)):
            problems.append(f"{name} must be a list of strings")
    if isinstance(cfg.id_params, dict):
        for method, params in cfg.id_params.items():
            if not isinstance(params, dict):
                problems.append(
                    f"id_params[{method!r}] must be an object of parameters"
                )
    return problems
