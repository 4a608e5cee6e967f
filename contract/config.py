"""The analysis config: what to measure and how, every default stated here once.

It is frozen and versioned and stored with every result: two results are comparable
when their configs are equal. The API checks a submitted config with
:func:`parse_config` before anything is queued; the library and the CLI use the same
function, so all three refuse the same things with the same words.

The JSON form::

    {"version": 2, "metrics": ["id", "mi"], "samples": 1000, "layers": "auto",
     "budget": 4096, "exact": [], "bottleneck_factor": 2.0, "batch_size": 256,
     "seed": 0, "device": "auto",
     "id": {"methods": [...], "params": {"mle": {"k": 10}}},
     "mi": {"methods": [...], "params": {...}}, "probe": {"cv": 5},
     "cka": {"layers": "auto"},
     "attribution": {"target": "auto", "maps": 16, "steps": 32}}

Each family's section is declared by the family (``contract.families``); sections
of families not in ``metrics`` keep their defaults. Version 1 configs (flat keys
such as ``id_methods``) are read and converted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contract.errors import ContractError
from contract.estimators import ESTIMATORS, validation_problems
from contract.families import FAMILIES, Section
from contract.types import Int

CONFIG_VERSION = 2


class AnalysisConfig(BaseModel):
    """The run-wide settings of an analysis and the families' sections.

    ``samples``: how many samples to analyse (a seeded subset of a larger dataset;
    ``None`` = all). ``layers``: ``"auto"`` (bottlenecks, block outputs and the
    model output), ``"all"`` (every module call) or comma-separated fnmatch globs.
    ``budget``: widest width kept as is; wider layers are randomly projected to
    it. ``exact``: globs of layers kept at full width. ``bottleneck_factor``: how
    much narrower a bottleneck is than what comes before and after it. ``device``:
    ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``; the service sends a
    ``"cpu"`` analysis to its CPU queue. A family's section: ``section(name)``.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    version: Int = CONFIG_VERSION
    metrics: tuple[str, ...] = ("id",)
    samples: Int | None = Field(default=1000, ge=3)
    layers: str = Field(default="auto", min_length=1, max_length=2000)
    budget: Int = Field(default=4096, ge=2)
    exact: tuple[str, ...] = ()
    bottleneck_factor: float = Field(default=2.0, gt=1)
    batch_size: Int = Field(default=256, ge=1)
    seed: Int = Field(default=0, ge=0, lt=2**63)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("version")
    @classmethod
    def _version(cls, version: int) -> int:
        if version != CONFIG_VERSION:
            raise ValueError(
                f"version {version} is not supported; use {CONFIG_VERSION}"
            )
        return version

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, metrics: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in metrics if m not in FAMILIES]
        if unknown:
            raise ValueError(
                f"unknown metric family {', '.join(map(repr, unknown))}; choose from "
                f"{', '.join(tuple(FAMILIES))}"
            )
        if len(set(metrics)) != len(metrics):
            raise ValueError("a metric family is named twice")
        return metrics

    @field_validator("layers")
    @classmethod
    def _layers(cls, layers: str) -> str:
        if not layers.strip():
            raise ValueError('must be "auto", "all" or comma-separated globs')
        return layers

    def section(self, family: str) -> Any:
        """The config section of ``family`` (its declared model, defaults filled)."""
        extra = self.__pydantic_extra__ or {}
        if family not in FAMILIES:
            raise KeyError(family)
        return extra[family] if family in extra else FAMILIES[family].config()

    def with_changes(self, **changes: Any) -> AnalysisConfig:
        """A copy with run-wide fields or whole sections replaced (checked again)."""
        return parse_config(self.to_dict() | _dumped(changes))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, every section included with its defaults."""
        out = {name: _jsonable(getattr(self, name)) for name in type(self).model_fields}
        for family in tuple(FAMILIES):
            out[family] = _jsonable(self.section(family).model_dump())
        return out


def parse_config(data: dict[str, Any] | AnalysisConfig | None) -> AnalysisConfig:
    """Check ``data`` and build the config; lists become tuples.

    Raises ``ContractError`` (code ``invalid_input``) whose ``problems`` list every
    problem found, each naming its key: unknown keys (with the new name of a
    version-1 key), wrong types, values out of range, unknown families and
    estimators, bad estimator parameters.
    """
    if isinstance(data, AnalysisConfig):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ContractError(
            "invalid analysis config",
            [f"the config must be a JSON object, got {type(data).__name__}"],
        )
    data = dict(data)
    if data.get("version") == 1:
        data = upgrade_v1(data)
    core = list(AnalysisConfig.model_fields)
    problems: list[str] = []
    sections: dict[str, Section] = {}
    for key in [k for k in data if k not in core]:
        value = data.pop(key)
        if key in FAMILIES:
            problems += _section(key, value, sections)
        elif key in V1_KEYS:
            problems.append(f"{key}: this key is now {V1_KEYS[key]}")
        else:
            problems.append(
                f"{key}: unknown key; accepted: {', '.join([*core, *tuple(FAMILIES)])}"
            )
    for key in ("metrics", "exact"):
        if isinstance(data.get(key), list):
            data[key] = tuple(data[key])
        elif isinstance(data.get(key), str):
            data[key] = tuple(v.strip() for v in data[key].split(",") if v.strip())
    for family, spec in FAMILIES.items():
        sections.setdefault(family, spec.config())
    try:
        config = AnalysisConfig.model_validate(data | sections)
    except ValidationError as exc:
        problems += [
            p for p in validation_problems(exc) if not p.startswith(tuple(FAMILIES))
        ]
        config = None
    if problems or config is None:
        raise ContractError("invalid analysis config", problems)
    return config


def _section(family: str, value: Any, sections: dict[str, Section]) -> list[str]:
    model = FAMILIES[family].config
    if isinstance(value, model):
        sections[family] = value
        return []
    if not isinstance(value, dict):
        return [
            f"{family}: must be an object with keys {', '.join(model.model_fields)}"
        ]
    value = {
        k: tuple(v) if isinstance(v, list) and k in _TUPLE_KEYS else v
        for k, v in value.items()
    }
    try:
        sections[family] = model.model_validate(value)
    except ValidationError as exc:
        return validation_problems(exc, family)
    return []


_TUPLE_KEYS = ("methods",)

# Version-1 flat keys and where they live now.
V1_KEYS: dict[str, str] = {
    "id_methods": "id.methods",
    "id_params": "id.params",
    "mi_methods": "mi.methods",
    "mi_params": "mi.params",
    "mi_max_dim": "mi.params.ksg.max_dim",
    "probe_cv": "probe.cv",
    "cka_layers": "cka.layers",
    "attribution_target": "attribution.target",
    "attribution_maps": "attribution.maps",
    "attribution_steps": "attribution.steps",
}


def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 config (flat keys) in the version-2 form, meaning unchanged."""
    out: dict[str, Any] = {"version": CONFIG_VERSION}
    for key, value in data.items():
        if key == "version":
            continue
        if key not in V1_KEYS:
            out[key] = value
            continue
        path = V1_KEYS[key].split(".")
        if key == "attribution_target" and value is None:
            value = "predicted"
        if key == "mi_max_dim":
            params = out.setdefault("mi", {}).setdefault("params", {})
            params.setdefault("ksg", {}).setdefault("max_dim", value)
            continue
        if key == "mi_params" and isinstance(value, dict):
            value = {
                m: {k: v for k, v in p.items() if not (m == "probe" and k == "cv")}
                if isinstance(p, dict)
                else p
                for m, p in value.items()
            }
            params = out.setdefault("mi", {}).setdefault("params", {})
            for m, p in value.items():
                params[m] = (
                    (p | params[m])
                    if isinstance(p, dict) and isinstance(params.get(m), dict)
                    else p
                )
            continue
        out.setdefault(path[0], {})[path[1]] = value
    return out


def _dumped(changes: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in changes.items()
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def config_schema() -> dict[str, Any]:
    """The JSON schema of a config as the API documents it: the run-wide fields,
    the family names, and each family's section with its estimators' parameters."""
    schema = AnalysisConfig.model_json_schema()
    props = schema["properties"]
    props["version"]["enum"] = [CONFIG_VERSION]
    props["metrics"]["items"] = {"enum": list(FAMILIES)}
    props["metrics"]["uniqueItems"] = True
    for name, spec in FAMILIES.items():
        section = spec.config.model_json_schema()
        for key, sub in section.get("properties", {}).items():
            if key == "methods" and name in ESTIMATORS:
                sub["items"] = {"enum": list(ESTIMATORS[name])}
                sub["uniqueItems"] = True
            if key == "params" and name in ESTIMATORS:
                section["properties"]["params"] = {
                    "type": "object",
                    "description": "Per-estimator parameters.",
                    "properties": {
                        est: _params_schema(name, est) for est in ESTIMATORS[name]
                    },
                    "additionalProperties": False,
                }
        props[name] = section
    schema["additionalProperties"] = False
    schema.pop("title", None)
    return schema


def _params_schema(family: str, estimator: str) -> dict[str, Any]:
    schema = ESTIMATORS[family][estimator].params.model_json_schema()
    schema.pop("title", None)
    if (family, estimator) == ("mi", "probe"):  # its folds are probe.cv
        schema["properties"].pop("cv", None)
    # n_subsamples=1 gives no spread: documented as 0 or at least 2.
    n_sub = schema["properties"]["n_subsamples"]
    default = n_sub.get("default")
    schema["properties"]["n_subsamples"] = {
        "anyOf": [{"const": 0}, {"type": "integer", "minimum": 2}],
        "default": default,
    }
    return schema
