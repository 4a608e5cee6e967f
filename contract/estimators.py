"""The estimators of the metric families: names, parameters with their defaults and
ranges, and the sample counts below which a value is void or flagged.

Stated once here; the analysis library reads its defaults from these models and the
API checks a config against them before anything is queued.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contract.errors import ContractError
from contract.types import Int


class Params(BaseModel):
    """Parameters of one estimator: keyword-only, strict types, no unknown keys."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Subsampling(Params):
    """The interval: ``n_subsamples`` seeded subsamples of ``subsample_fraction`` of
    the rows without replacement (0 for no interval), at ``ci_level``."""

    n_subsamples: Int = Field(default=10, ge=0)
    subsample_fraction: float = Field(default=0.5, gt=0, lt=1)
    ci_level: float = Field(default=0.95, gt=0, lt=1)

    @model_validator(mode="after")
    def _spread(self) -> Subsampling:
        if self.n_subsamples == 1:
            raise ValueError(
                "n_subsamples=1 cannot give a spread: pass 0 (no interval) or >= 2"
            )
        return self


# --- intrinsic dimension ---------------------------------------------------------


class TwoNNParams(Subsampling):
    discard_fraction: float = Field(default=0.1, ge=0, lt=1)


class MLEParams(Subsampling):
    k: Int = Field(default=20, ge=2)
    unbiased: bool = False

    @model_validator(mode="after")
    def _k_unbiased(self) -> MLEParams:
        if self.unbiased and self.k < 3:
            raise ValueError("k must be at least 3 when unbiased is true")
        return self


class PCAParams(Subsampling):
    variance: float = Field(default=0.9, gt=0, lt=1)


class ParticipationRatioParams(Subsampling):
    pass


# --- mutual information ------------------------------------------------------------


class MISubsampling(Subsampling):
    n_subsamples: Int = Field(default=5, ge=0)


class KSGParams(MISubsampling):
    k: Int = Field(default=3, ge=1)
    max_dim: Int = Field(default=16, ge=1)
    standardize: bool = True


class GaussianParams(MISubsampling):
    shrinkage: Literal["auto", "ledoit_wolf", "none"] = "auto"
    max_dim: Int = Field(default=256, ge=1)


class BinningParams(MISubsampling):
    n_bins: Int = Field(default=30, ge=1)
    bin_range: Literal["unit", "layer"] = "unit"
    binned: Literal["auto", "X", "Y"] = "auto"


class NoisyParams(MISubsampling):
    sigma: float | None = Field(default=None, gt=0)
    sigma_rel: float = Field(default=0.1, gt=0)
    n_mc: Int = Field(default=1, ge=1)
    noised: Literal["auto", "X", "Y"] = "auto"


class InfoNCEParams(MISubsampling):
    batch_size: Int = Field(default=128, ge=2)
    steps: Int = Field(default=300, ge=0)
    lr: float = Field(default=1e-3, gt=0)
    hidden: Int = Field(default=128, ge=1)
    layers: Int = Field(default=2, ge=0)
    embed: Int = Field(default=32, ge=1)
    test_fraction: float = Field(default=0.3, gt=0, lt=1)
    max_dim: Int = Field(default=256, ge=1)


class ProbeMIParams(MISubsampling):
    cv: Int = Field(default=5, ge=2)
    max_dim: Int = Field(default=256, ge=1)


@dataclass(frozen=True)
class EstimatorSpec:
    """One estimator: ``min_samples`` is the row count below which its value is
    ``null`` with a reason (too few points to mean anything); below ``low_samples``
    the value stands but carries the flag ``low_samples``."""

    name: str
    family: str
    params: type[Params]
    min_samples: int
    low_samples: int
    summary: str


ESTIMATORS: dict[str, dict[str, EstimatorSpec]] = {
    "id": {
        s.name: s
        for s in (
            EstimatorSpec("twonn", "id", TwoNNParams, 20, 200, "Facco et al. 2017"),
            EstimatorSpec("mle", "id", MLEParams, 20, 200, "Levina & Bickel 2005"),
            EstimatorSpec("pca90", "id", PCAParams, 20, 200, "PCA, 90% variance"),
            EstimatorSpec(
                "participation_ratio",
                "id",
                ParticipationRatioParams,
                20,
                200,
                "(sum lambda)^2 / sum lambda^2",
            ),
        )
    },
    "mi": {
        s.name: s
        for s in (
            EstimatorSpec("ksg", "mi", KSGParams, 50, 500, "Kraskov et al. 2004"),
            EstimatorSpec("gaussian", "mi", GaussianParams, 20, 200, "Gaussian"),
            EstimatorSpec("binning", "mi", BinningParams, 20, 500, "binning"),
            EstimatorSpec("noisy", "mi", NoisyParams, 20, 500, "Goldfeld et al."),
            EstimatorSpec("infonce", "mi", InfoNCEParams, 100, 1000, "InfoNCE"),
            EstimatorSpec("probe", "mi", ProbeMIParams, 20, 200, "probe bound"),
        )
    },
}

ID_METHODS: tuple[str, ...] = tuple(ESTIMATORS["id"])
MI_METHODS: tuple[str, ...] = tuple(ESTIMATORS["mi"])


def estimator(family: str, name: str) -> EstimatorSpec:
    """The spec of ``name`` in ``family``; ``ContractError`` naming the choices."""
    specs = ESTIMATORS.get(family, {})
    if name not in specs:
        raise ContractError(
            f"unknown {family} estimator {name!r}; choose from {', '.join(specs)}"
        )
    return specs[name]


def resolve_params(family: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of the estimator, defaults filled in, checked.

    Raises ``ContractError`` listing every problem (unknown key, wrong type, out of
    range), each naming the parameter.
    """
    spec = estimator(family, name)
    try:
        return spec.params.model_validate(params).model_dump()
    except ValidationError as exc:
        raise ContractError(
            f"invalid parameters for {family} estimator {name!r} (valid: "
            f"{', '.join(spec.params.model_fields)})",
            validation_problems(exc),
        ) from exc


def validation_problems(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per place of a pydantic error, ``where: what``; the alternatives of
    a union at one place are joined with "or"."""
    found: dict[str, list[str]] = {}
    for err in exc.errors():
        loc = [str(p) for p in (prefix, *err.get("loc", ())) if p != ""]
        where = ".".join(p for p in loc if not _UNION_TAG.fullmatch(p))
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key"
        found.setdefault(where, []).append(msg.removeprefix("Value error, "))
    return [f"{w}: {' or '.join(m)}" if w else " or ".join(m) for w, m in found.items()]


# The location parts pydantic adds for the branches of a union.
_UNION_TAG = re.compile(r"(literal|function-\w+)\[.*\]|int|str|float|bool|none")
