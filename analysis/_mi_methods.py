"""Per-method preparation of ``estimate_mi`` (private): each ``prepare_*`` checks the
data for its method, does the one-off work on all rows (PCA, standardisation, bin
ids, the noise scale), and returns a ``Prepared`` whose ``core`` estimates on any
subset of rows (all of them, or one subsample of the interval)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from analysis._mi_common import (
    MIMemo,
    pca_memo,
    remember,
    row_ids,
    standardize,
    subseed,
)
from analysis._mi_knn import ksg, max_norm_distances, ross, scans_x
from analysis._mi_neural import infonce
from analysis._mi_noisy import noisy_mi
from analysis._mi_plugin import bin_ids, gaussian, plugin_mi
from analysis.errors import DataError, InvalidInputError
from analysis.probes import cross_validate, folds_for, probe_inputs

# Scale of the seeded jitter that separates identical rows before a kNN estimate,
# relative to the unit variance of the standardised columns (scikit-learn adds
# 1e-10 in its mutual_info_* for the same reason).
JITTER = 1e-10
# A value at 95% of a ceiling is flagged "near_ceiling".
NEAR_CEILING = 0.95

Tensor = torch.Tensor
Memo = MIMemo | None  # what prepare_* computes from one tensor alone goes through it
Rows = torch.Tensor | None
Core = Callable[[Rows], tuple[float, dict[str, Any]]]


@dataclass
class Prepared:
    # rows (None: all) -> (estimate, details of that run: recorded in params, except
    # "reason" and "flags", which go to the MetricValue's fields)
    core: Core
    noise_model: str
    params: dict[str, Any] = field(default_factory=dict)  # resolved, recorded
    flags: list[str] = field(default_factory=list)
    ceiling: float | None = None  # "near_ceiling" at NEAR_CEILING of it


def _take(A: torch.Tensor, rows: Rows) -> torch.Tensor:
    return A if rows is None else A[rows]


def _reduce(
    A: torch.Tensor, max_dim: int, seed: int, memo: MIMemo | None
) -> tuple[torch.Tensor, int | None]:
    """``A`` on its ``max_dim`` leading principal axes when wider, and that width."""
    if A.shape[1] > max_dim:
        return pca_memo(memo, A, max_dim, seed), max_dim  # (N, max_dim)
    return A, None


def _pca_record(widths: dict[str, int | None]) -> tuple[dict[str, Any], list[str]]:
    params: dict[str, Any] = {f"pca_{k}": v for k, v in widths.items()}
    flags = ["pca_reduced"] if any(v is not None for v in widths.values()) else []
    return params, flags


def _jitter_duplicates(A: torch.Tensor, seed: int) -> tuple[torch.Tensor, float]:
    """``A`` (N, D) float64 with seeded noise of scale ``JITTER`` when two rows are
    identical (their kNN distance would be 0), and the jitter scale (0: none)."""
    if int(row_ids(A).max()) + 1 == A.shape[0]:
        return A, 0.0
    g = torch.Generator().manual_seed(subseed(seed, "jitter"))
    noise = torch.randn(A.shape, generator=g, dtype=torch.float64).to(A.device)
    return A + JITTER * noise, JITTER


def prepare_ksg(
    X: Tensor, Y: Tensor, discrete: bool, p: dict[str, Any], seed: int, memo: Memo
) -> Prepared:
    k, X_given = p["k"], X
    X, q_x = _reduce(X, p["max_dim"], seed, memo)
    X = standardize(X) if p["standardize"] else X.to(torch.float64)
    if discrete:
        X, jitter = _jitter_duplicates(X, seed)
        inverse, counts = torch.unique(Y, return_inverse=True, return_counts=True)[1:]
        params, flags = _pca_record({"x": q_x})
        params |= {
            "variant": "ross2014_mixed",
            "n_left_out": int((counts[inverse] < 2).sum()),
        }
        noise_model = "none: Y discrete (Ross 2014 mixed estimator)"

        def core(rows: Rows) -> tuple[float, dict[str, Any]]:
            return ross(_take(X, rows), _take(Y, rows), k)[0], {}

    else:
        Y, q_y = _reduce(Y, p["max_dim"], seed, memo)
        Y = standardize(Y) if p["standardize"] else Y.to(torch.float64)
        Dx = X.shape[1]
        XY, jitter = _jitter_duplicates(torch.cat([X, Y], dim=1), seed)  # (N, Dx+Dy)
        X, Y = XY[:, :Dx], XY[:, Dx:]
        params, flags = _pca_record({"x": q_x, "y": q_y})
        params["variant"] = "ksg1"
        noise_model = (
            f"none: continuous X and Y, finite by the sample: k={k} neighbours set "
            "the resolution"
        )

        # X's distances, for the next layer on the same X (jitter would move them)
        dx = None
        if memo is not None and jitter == 0.0 and scans_x(X, Y):
            purpose = ("ksg_dx", p["max_dim"], p["standardize"], seed)
            dx = memo.get(X_given, purpose, lambda: max_norm_distances(X))  # (N, N)

        def core(rows: Rows) -> tuple[float, dict[str, Any]]:
            d = dx if dx is None or rows is None else dx[rows][:, rows]  # (n, n)
            return ksg(_take(X, rows), _take(Y, rows), k, dx=d), {}

    params["jitter"] = jitter
    return Prepared(core, noise_model, params, flags + ["jittered"] * (jitter > 0))


def prepare_gaussian(
    X: Tensor, Y: Tensor, discrete: bool, p: dict[str, Any], seed: int, memo: Memo
) -> Prepared:
    if discrete:
        raise InvalidInputError(
            "'gaussian' needs a continuous Y: with class labels the Gaussian formula "
            "is no bound (it grows without limit as classes separate, while "
            "I <= H(Y)); use 'ksg' (Ross's estimator), 'probe' or 'binning'"
        )
    X, q_x = _reduce(X, p["max_dim"], seed, memo)
    Y, q_y = _reduce(Y, p["max_dim"], seed, memo)
    params, flags = _pca_record({"x": q_x, "y": q_y})
    shrink = p["shrinkage"]
    noise_model = "jointly Gaussian model" + (
        "" if shrink == "none" else f" of correlations, shrinkage={shrink}"
    )

    def core(rows: Rows) -> tuple[float, dict[str, Any]]:
        value, delta = gaussian(_take(X, rows), _take(Y, rows), shrink)
        details: dict[str, Any] = {"shrinkage_intensity": delta}
        if not math.isfinite(value):
            details["reason"] = (
                "singular covariance (collinear columns): pass shrinkage='auto' or "
                "'ledoit_wolf'"
            )
        return value, details

    return Prepared(core, noise_model, params, flags)


def _sides(
    X: torch.Tensor,
    Y: torch.Tensor,
    discrete: bool,
    which: str,
    name: str,
    memo: MIMemo | None,
) -> tuple[str, torch.Tensor, torch.Tensor]:
    """The representation side (``"X"``/``"Y"``), its rows, and the ids of the other
    side's rows (class labels, or distinct rows)."""
    side = which if which != "auto" else ("X" if discrete else "Y")
    if side == "Y" and discrete:
        raise InvalidInputError(
            f"{name}='Y' but Y holds class labels; the representation must be "
            f"continuous: pass {name}='X' (or 'auto')"
        )
    T, other = (X, Y) if side == "X" else (Y, X)
    if other.ndim == 1:
        return side, T, other
    return side, T, remember(memo, other, ("row_ids",), lambda: row_ids(other))


def prepare_binning(
    X: Tensor, Y: Tensor, discrete: bool, p: dict[str, Any], seed: int, memo: Memo
) -> Prepared:
    side, T, other = _sides(X, Y, discrete, p["binned"], "binned", memo)
    n_bins, bin_range = p["n_bins"], p["bin_range"]
    cells = remember(  # (N,)
        memo, T, ("bins", n_bins, bin_range), lambda: bin_ids(T, n_bins, bin_range)
    )
    over = "each unit's range" if p["bin_range"] == "unit" else "the layer's range"
    noise_model = (
        f"equal-width binning of {side}, {p['n_bins']} bins per unit over {over}"
    )

    def core(rows: Rows) -> tuple[float, dict[str, Any]]:
        value, h_t, h_other = plugin_mi(_take(cells, rows), _take(other, rows))
        return value, {"h_binned": h_t, "h_other": h_other}

    # The plug-in value is at most ln N (every row in its own cell).
    return Prepared(core, noise_model, {"binned": side}, ceiling=math.log(len(T)))


def prepare_noisy(
    X: Tensor, Y: Tensor, discrete: bool, p: dict[str, Any], seed: int, memo: Memo
) -> Prepared:
    side, T, other = _sides(X, Y, discrete, p["noised"], "noised", memo)
    if p["sigma"] is None:
        scale = float(T.to(torch.float64).std(dim=0).mean()) if T.shape[0] > 1 else 0.0
        sigma = p["sigma_rel"] * scale
        rule = f"{p['sigma_rel']:g} x the mean per-unit std of {side}"
        if not sigma > 0:
            raise DataError(
                f"{side} is constant, so the relative noise scale is 0; pass sigma "
                "(the mutual information of a constant is 0)"
            )
    else:
        sigma, rule = float(p["sigma"]), "given"
    n_mc, noise_seed = p["n_mc"], subseed(seed, "noise")
    noise_model = f"gaussian noise sigma={sigma:.4g} added to {side} ({rule})"

    def core(rows: Rows) -> tuple[float, dict[str, Any]]:
        return noisy_mi(_take(T, rows), _take(other, rows), sigma, n_mc, noise_seed), {}

    params = {"noised": side, "sigma": sigma, "sigma_rule": rule}
    return Prepared(core, noise_model, params)


def prepare_infonce(
    X: Tensor, Y: Tensor, discrete: bool, p: dict[str, Any], seed: int, memo: Memo
) -> Prepared:
    X, q_x = _reduce(X, p["max_dim"], seed, memo)
    if discrete:
        Y, q_y = torch.nn.functional.one_hot(row_ids(Y)).to(torch.float32), None
    else:
        Y, q_y = _reduce(Y, p["max_dim"], seed, memo)
    params, flags = _pca_record({"x": q_x, "y": q_y})
    opts = {k: p[k] for k in ("batch_size", "steps", "lr", "hidden", "layers")}
    opts |= {"embed": p["embed"], "test_fraction": p["test_fraction"]}
    N, critic_seed = X.shape[0], subseed(seed, "critic")
    B = min(p["batch_size"], max(2, round(p["test_fraction"] * N)))
    noise_model = f"none: a lower bound, at most ln(B) = ln({B}) = {math.log(B):.4g}"

    def core(rows: Rows) -> tuple[float, dict[str, Any]]:
        value, b = infonce(_take(X, rows), _take(Y, rows), seed=critic_seed, **opts)
        return value, {"eval_batch": b, "ceiling": math.log(b)}

    params["critic"] = "separable"
    return Prepared(core, noise_model, params, flags, ceiling=math.log(B))


def prepare_probe(
    X: Tensor, Y: Tensor, discrete: bool, p: dict[str, Any], seed: int, memo: Memo
) -> Prepared:
    if not discrete:
        raise InvalidInputError(
            "'probe' needs Y as integer class labels of shape (N,), got a float "
            "tensor; for a continuous Y use 'ksg', 'gaussian' or 'infonce'"
        )
    feats, labels, n_comp = probe_inputs(X, Y, p["max_dim"], seed, memo)
    cv = p["cv"]
    folds_for(labels, cv)  # DataError now rather than in the first fit

    def core(rows: Rows) -> tuple[float, dict[str, Any]]:
        idx = slice(None) if rows is None else rows.cpu().numpy()
        f, y = feats[idx], labels[idx]
        folds = cross_validate(f, y, cv, seed)
        h_y = _entropy_np(y)
        ce = float(-folds.log_p_true.mean())
        info = {
            "h_y": h_y,
            "cross_entropy": ce,
            "accuracy": sum(folds.fold_accuracies) / folds.cv,
            "cv_used": folds.cv,
            "flags": ["not_converged"] * (not folds.converged)
            + ["cv_reduced"] * (folds.cv < cv),
        }
        return max(0.0, h_y - ce), info

    noise_model = "none: Y discrete; H(Y) - held-out cross-entropy of a probe"
    flags = ["pca_reduced"] if n_comp is not None else []
    return Prepared(core, noise_model, {"n_components": n_comp}, flags)


def _entropy_np(y: np.ndarray) -> float:
    counts = np.unique(y, return_counts=True)[1]
    q = counts / counts.sum()
    return float(-(q * np.log(q)).sum())


# Fewest rows each method's computation takes, from its parameters; estimate_mi
# requires the larger of this and the contract's min_samples.
N_MIN: dict[str, Callable[[dict[str, Any]], int]] = {
    "ksg": lambda p: p["k"] + 1,
    "gaussian": lambda p: 3,
    "binning": lambda p: 2,
    "noisy": lambda p: 3,
    "infonce": lambda p: 8,
    "probe": lambda p: 4,
}

PREPARE: dict[str, Callable[..., Prepared]] = {
    "ksg": prepare_ksg,
    "gaussian": prepare_gaussian,
    "binning": prepare_binning,
    "noisy": prepare_noisy,
    "infonce": prepare_infonce,
    "probe": prepare_probe,
}
