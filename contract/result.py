"""The result document: what the CLI writes (``--out``), the REST API serves
(``GET /v1/analyses/{id}/results``) and the reporting pipeline reads.

``SCHEMA_VERSION`` changes whenever a field changes meaning or disappears; a new
metric only adds rows to ``layers[*].metrics``, a new family may add a section.
Version-1 documents are read and converted (:func:`upgrade_result`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contract.config import upgrade_v1

SCHEMA_VERSION = 2
# The HTML report a worker writes among an analysis's artifacts (GET .../report).
REPORT_FILE = "report.html"

# Flags a metric row may carry (warnings that do not void its value).
FLAGS: dict[str, str] = {
    "low_samples": "fewer samples than the estimator's low_samples: read with care",
    "near_ceiling": "within 5% of the estimator's ceiling (ln B, ln N)",
    "pca_reduced": "a side was reduced by PCA first: a relative number",
    "jittered": "identical rows were jittered by 1e-10",
    "not_converged": "a probe's solver stopped at its iteration cap",
    "cv_reduced": "a probe ran with fewer folds than asked (a rare class)",
    "clipped": "the value or interval was clipped to the quantity's range",
    "identical": "the layer's outputs equal an earlier layer's (params.identical_to):"
    " its rows were measured once, there",
}


# What a bottleneck is, judged from the model's structure (analysis.bottlenecks).
PATTERNS: dict[str, str] = {
    "classic": "wide, narrow, wide inside one block (a ResNet bottleneck block)",
    "inverted": "a block's own projection onto a narrow stream that the next block "
    "expands again (MobileNetV2, a transformer's MLP)",
    "latent": "the code of a model that reconstructs its input (autoencoder, VAE)",
    "unet_bottom": "the deepest stage, with concatenated skips around it (U-Net)",
    "dense": "a narrow layer of an MLP",
}
Pattern = Literal["classic", "inverted", "latent", "unet_bottom", "dense"]


def _by_position(cls: type[BaseModel], args: tuple, data: dict) -> dict:
    """Keyword values for ``cls`` from positional ``args`` in field order."""
    names = list(cls.model_fields)
    if len(args) > len(names):
        raise TypeError(f"{cls.__name__} takes at most {len(names)} positional values")
    for name, value in zip(names, args, strict=False):
        if name in data:
            raise TypeError(f"{cls.__name__} got {name!r} twice")
        data[name] = value
    return data


class MetricRow(BaseModel):
    """One number measured at one layer by one estimator.

    ``value``, ``ci_low`` and ``ci_high`` are ``None`` when not finite; ``reason``
    then says why. ``flags`` are warnings that do not void the value (``FLAGS``).
    Built positionally too, in the order of the fields.
    """

    model_config = ConfigDict(extra="forbid")

    metric: str
    estimator: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n_samples: int = 0
    params: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = None
    flags: list[str] = Field(default_factory=list)

    def __init__(self, *args: Any, **data: Any) -> None:
        super().__init__(**_by_position(type(self), args, data))

    @model_validator(mode="before")
    @classmethod
    def _finite(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        bad = [
            name
            for name in ("value", "ci_low", "ci_high")
            if isinstance(data.get(name), float | int) and not math.isfinite(data[name])
        ]
        for name in bad:
            data[name] = None
        if bad and data.get("reason") is None:
            data["reason"] = f"non-finite {', '.join(bad)}"
        return data


class LayerRecord(BaseModel):
    """One captured layer (one call of one module) with its metric rows.

    ``projected_to`` is the stored width when the layer was reduced by a random
    projection (``projection`` describes it), else ``None``.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    index: int
    module: str
    shape: list[int]
    width: int
    is_bottleneck: bool
    projected_to: int | None = None
    projection: dict[str, Any] | None = None
    metrics: list[MetricRow] = Field(default_factory=list)

    def metric(self, metric: str, estimator: str) -> MetricRow | None:
        """The first row with this metric and estimator, if any."""
        for row in self.metrics:
            if row.metric == metric and row.estimator == estimator:
                return row
        return None


class BottleneckRecord(BaseModel):
    """A point where the representation narrows by the config's factor and widens
    again later.

    ``width_in`` is the widest width before it (since the last narrowing began),
    ``width`` its own, ``width_out`` the first width after it that is at least
    ``factor`` times wider; ``ratio = width_in / width``. ``kind``: ``"channel"``,
    ``"spatial"``, ``"channel+spatial"`` or ``"dense"``. ``skip_connection``: the
    enclosing block adds (or concatenates) its input back around it (``None``: the
    model could not be traced). ``pattern`` (``PATTERNS``) says what kind of neck it
    is; ``None`` in documents written before it existed.
    """

    model_config = ConfigDict(extra="forbid")

    layer: str
    block: str
    width_in: int
    width: int
    width_out: int
    ratio: float
    kind: str
    skip_connection: bool | None
    pattern: Pattern | None = None

    def __init__(self, *args: Any, **data: Any) -> None:
        super().__init__(**_by_position(type(self), args, data))


class ResultDocument(BaseModel):
    """The whole result. Sections of families besides the layer rows (``similarity``
    from ``cka``, ``attribution``) come after the core fields. ``warnings`` lists
    what the run changed or left out (samples clipped, a family skipped, a family
    that failed on a layer) so that a result that succeeded says what it lacks."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    model: dict[str, Any]
    dataset: dict[str, Any]
    config: dict[str, Any]
    layers: list[LayerRecord]
    bottlenecks: list[BottleneckRecord]
    provenance: dict[str, Any]
    warnings: list[str] = Field(default_factory=list)


def upgrade_result(data: dict[str, Any]) -> dict[str, Any]:
    """A result document of any supported version in the current form.

    Raises ``ValueError`` for a version this bottlelens cannot read.
    """
    version = data.get("schema_version")
    if version == SCHEMA_VERSION:
        return data
    if version == 1:
        config = dict(data.get("config") or {})
        return {
            **data,
            "schema_version": SCHEMA_VERSION,
            "config": upgrade_v1({**config, "version": 1}),
            "warnings": data.get("warnings", []),
        }
    raise ValueError(
        f"result schema_version {version!r} is not one of 1, {SCHEMA_VERSION}; "
        "re-run the analysis with this bottlelens"
    )
