"""The per-layer metric rows of ``analyse``: one function per metric family.

Each returns ``MetricValue`` rows; data that cannot give an estimate (too few
samples, NaN activations) becomes a row with a ``reason`` rather than an exception,
so one degenerate layer does not sink the others. Parameters are checked once,
before any long work, by ``check_params``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from analysis.capture import layer_seed
from analysis.config import AnalysisConfig
from analysis.errors import DataError
from analysis.intrinsic_dimension import estimate_id
from analysis.mutual_information import estimate_mi
from analysis.probes import probe_accuracy
from analysis.projection import SparseRandomProjection
from analysis.types import MetricValue

INPUT_NAME = "<input>"  # the projection-seed name of the flattened input


def check_params(cfg: AnalysisConfig) -> None:
    """Fail on a misspelt or out-of-range estimator parameter before long work.

    Each requested estimator runs once on a small seeded Gaussian sample, without
    its interval unless the user set one; a ``DataError`` there (say ``k`` above
    the sample count) only means the probe was too small, and is ignored.
    """
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn(64, 3, generator=gen)  # (64, 3)
    if "id" in cfg.metrics:
        for method in cfg.id_methods:
            params = {"n_subsamples": 0, **cfg.id_params.get(method, {})}
            with contextlib.suppress(DataError):
                estimate_id(probe, method, seed=cfg.seed, **params)
    if "mi" in cfg.metrics:
        labels = torch.arange(64) % 2  # (64,)
        for method in cfg.mi_methods:
            other = labels if method == "probe" else probe[:, :1]
            params = {"n_subsamples": 0, **mi_params(cfg, method)}
            if method == "infonce":  # check the values, skip the training
                params |= {"steps": min(params["steps"], 2), "n_subsamples": 0}
            with contextlib.suppress(DataError):
                estimate_mi(probe, other, method, seed=cfg.seed, **params)


def mi_params(cfg: AnalysisConfig, method: str) -> dict[str, Any]:
    params = dict(cfg.mi_params.get(method, {}))
    if method == "ksg":
        params.setdefault("max_dim", cfg.mi_max_dim)
    if method == "infonce":
        params.setdefault("steps", 200)
    return params


def flat_input(
    x: torch.Tensor, cfg: AnalysisConfig
) -> tuple[torch.Tensor, dict | None]:
    """The inputs as X of I(X;T): flattened, projected like a layer when wider
    than the budget. Returns ``(X (n, w), projection description or None)``."""
    X = x.flatten(1).float()  # (n, D)
    if X.shape[1] <= cfg.budget:
        return X, None
    proj = SparseRandomProjection(
        X.shape[1], cfg.budget, layer_seed(cfg.seed, INPUT_NAME), device=X.device
    )
    return proj(X), proj.describe()


def id_rows(acts: torch.Tensor, cfg: AnalysisConfig) -> list[MetricValue]:
    rows = []
    for method in cfg.id_methods:
        params = cfg.id_params.get(method, {})
        try:
            rows.append(estimate_id(acts, method, seed=cfg.seed, **params))
        except DataError as exc:
            rows.append(_reason("intrinsic_dimension", method, acts, params, exc))
    return rows


def mi_rows(
    acts: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor | None,
    cfg: AnalysisConfig,
    input_note: dict | None,
) -> list[MetricValue]:
    """``mi_input`` = I(X;T) and ``mi_output`` = I(T;Y) for each MI method.

    ``probe`` needs labels and only gives ``mi_output``; ``gaussian`` refuses class
    labels (its formula on one-hot labels is not a bound and grows past H(Y)), so
    with labels its ``mi_output`` row is ``None`` with that reason; ksg, binning or
    probe answer it. Without labels there is no ``mi_output``.
    """
    rows = []
    discrete = y is not None and not y.is_floating_point()
    for method in cfg.mi_methods:
        params = mi_params(cfg, method)
        if method != "probe":
            row = _mi(x, acts, method, "mi_input", cfg.seed, params)
            if input_note is not None:
                row.params["input_projection"] = input_note
            rows.append(row)
        if y is None:
            continue
        if method == "gaussian" and discrete:
            rows.append(
                MetricValue(
                    "mi_output",
                    method,
                    None,
                    n_samples=len(acts),
                    params=params,
                    reason="discrete Y: no Gaussian bound",
                )
            )
            continue
        rows.append(_mi(acts, y, method, "mi_output", cfg.seed, params))
    return rows


def probe_rows(
    acts: torch.Tensor, y: torch.Tensor | None, cfg: AnalysisConfig
) -> list[MetricValue]:
    if y is None or y.is_floating_point():
        return []
    try:
        return [probe_accuracy(acts, y, seed=cfg.seed, cv=cfg.probe_cv)]
    except DataError as exc:
        return [_reason("probe_accuracy", "logistic_regression", acts, {}, exc)]


def _mi(
    a: torch.Tensor,
    b: torch.Tensor,
    method: str,
    metric: str,
    seed: int,
    params: dict[str, Any],
) -> MetricValue:
    try:
        return estimate_mi(a, b, method, seed=seed, metric=metric, **params)
    except DataError as exc:
        return _reason(metric, method, a, params, exc)


def _reason(
    metric: str, estimator: str, acts: torch.Tensor, params: dict, exc: Exception
) -> MetricValue:
    return MetricValue(
        metric,
        estimator,
        None,
        n_samples=len(acts),
        params=dict(params),
        reason=str(exc),
    )
