"""Mutual-information estimators between a layer and its inputs or labels.

``estimate_mi(X, Y, method)`` returns ``I(X; Y)`` in nats as an
``analysis.types.MetricValue``. ``X`` (N, ...) is flattened to (N, Dx); ``Y`` is
continuous (a float tensor (N, ...), flattened) or discrete (an integer tensor
(N,) of class labels). The mutual information between an input and a deterministic
layer of it is infinite for continuous data; each estimator makes it finite in its
own way, which ``params["noise_model"]`` says in words.

Every method's parameters, with their defaults and ranges, are its model in
``contract.estimators`` (``KSGParams``, ``GaussianParams``, ``BinningParams``,
``NoisyParams``, ``InfoNCEParams``, ``ProbeMIParams``); ``estimate_mi`` checks them
there. Figures below quoted "at the defaults" are for those values.

Methods (``MI_ESTIMATORS``, the contract's ``MI_METHODS``):

- ``"ksg"``: Kraskov, Stoegbauer & Grassberger (2004) estimator 1, max-norm, ``k``
  neighbours, on z-scored columns. With class labels as ``Y``, the
  mixed discrete-continuous estimator of Ross (2014) instead
  (``params["variant"]``). A side wider than ``max_dim`` is first
  reduced to ``max_dim`` principal components (seeded randomised PCA; flag
  ``"pca_reduced"``): KSG loses most of the information in tens of dimensions (on
  a sparse Gaussian task of 1.02 nats it recovered 99% at 2 dimensions, 35% at 10,
  6% at 50), so a reduced estimate is a relative number, not an absolute one.
  Identical rows get a seeded 1e-10 jitter (flag ``"jittered"``). The neighbour
  search is ``analysis.neighbors.knn`` (Chebyshev); the counts run over
  ``(chunk, N)`` blocks, never ``N x N``.
- ``"gaussian"``: ``0.5 (logdet Sxx + logdet Syy - logdet S)`` of the z-scored
  columns' covariance; exact for jointly Gaussian data, and for any data the MI of
  the Gaussian with the same covariance. ``shrinkage="auto"`` applies Ledoit-Wolf
  (intensity in ``params["shrinkage_intensity"]``) only when ``Dx + Dy > N / 10``
  or the sample covariance is singular: with few dimensions the plug-in bias
  (about ``Dx Dy / 2N``) is smaller than what shrinkage costs (0.045 nats at
  N=2000, Dx=Dy=3); ``"ledoit_wolf"`` or ``"none"`` force the choice. Sides wider
  than ``max_dim`` are reduced by PCA. Class labels as ``Y`` are
  refused: the formula on one-hot labels is not a bound and grows past ``H(Y)`` as
  classes separate.
- ``"binning"`` (Shwartz-Ziv & Tishby 2017): one side, the representation, is cut
  into ``n_bins`` equal-width bins per unit (over each unit's range,
  or with ``bin_range="layer"`` the layer's range, their convention for ``tanh``);
  the other side is discrete by row identity (class labels, or distinct inputs),
  and ``I = H(T_b) + H(other) - H(T_b, other)``, plug-in. Which side is binned:
  ``binned="auto"`` bins ``X`` when ``Y`` holds labels (``estimate_mi(T, labels)``:
  ``I(T; Y) = H(T_b) - H(T_b | Y)``) and ``Y`` otherwise
  (``estimate_mi(inputs, T)``: ``I(X; T) = H(T_b)`` for distinct inputs); pass
  ``"X"`` or ``"Y"`` to choose. ``params["binned"]`` records the side.
- ``"noisy"`` (Goldfeld et al. 2019): ``I(T + Z; other)`` with
  ``Z ~ N(0, sigma^2 I)`` added to the representation (``noised``, chosen like
  ``binned``), the other side discrete by row identity. ``sigma`` defaults to
  ``sigma_rel`` times the mean per-unit s.d. of ``T``; ``params`` holds the
  rule and the absolute ``sigma``. Entropies of the Gaussian mixtures are estimated
  by Monte Carlo with a leave-one-out kernel density (``analysis._mi_noisy``). Bias:
  by Jensen, ``E[-log p_hat] >= -log p``, so the marginal entropy and the estimate
  read high at small ``N``; when ``sigma`` is small next to the spacing of the
  rows of ``T`` (high ``D``) the density at a point is that of its nearest other
  row, and the estimate is a nearest-neighbour estimate with its own large bias.
  Measured on N(0, I_D), N=2000: within 0.05 nats of ``D/2 ln(1 + 1/sigma^2)``
  for D=2, sigma in {0.5, 1}; +0.19 (4%) at sigma=0.1; at D=256, sigma=0.5 (and
  N=4000) 747 nats for a true 206.
  Cost: ``n_mc`` x ``N^2 D`` float64 products; more draws per row
  barely help (at N=2000 the s.d. over samples went from 0.032 to 0.027 nats
  with 4), the sample's own variation dominates.
- ``"infonce"`` (van den Oord et al. 2018): a separable MLP critic trained with Adam
  for ``steps`` on 70% of the rows, on ``X``'s device, seeded; the bound is
  averaged over held-out batches of ``B = min(batch_size, held-out rows)`` and is
  never above ``ln B`` (flag ``"near_ceiling"`` within 5% of it). Class labels are
  one-hot encoded. Sides wider than ``max_dim`` are reduced by PCA
  first: a fixed map, so the bound stays a lower bound on ``I(X; Y)`` (data
  processing), and a 4096-wide side no longer costs 9 s of CPU per training. Cost:
  ``1 + n_subsamples`` trainings (about 1.5 s each on one CPU core at the
  defaults); pass ``n_subsamples=0`` for one.
- ``"probe"``: ``max(0, H(Y) - CE)`` with ``CE`` the held-out cross-entropy of the
  cross-validated logistic-regression probe of ``analysis.probes`` (``X`` the
  layer, ``Y`` class labels): a lower bound on ``I(X; Y)`` (a probe's
  cross-entropy is at least ``H(Y | X)``; the 0 floor is the label-prior
  predictor). ``params`` holds ``h_y``, ``cross_entropy`` and ``accuracy``.

The interval (Holmes & Nemenman 2019, Phys. Rev. E 100: 022404, with the delete-d
jackknife of ``analysis._id_uncertainty``): ``n_subsamples`` seeded
subsamples of ``round(subsample_fraction * N)`` rows, drawn WITHOUT
replacement (a bootstrap would duplicate rows: zero neighbour distances, repeated
bins), each estimated afresh with the full run's preprocessing (PCA, scaling, bin
edges, ``sigma``); ``se = sqrt(m / (N - m) * s^2)`` from their s.d. ``s`` and
``CI = value -+ t_{B-1} se``, centred on the full-sample value. On 20 independent
bivariate Gaussian samples (N=2000, rho 0.5 and 0.9, ``ksg`` and ``gaussian``)
``se`` was 0.8-1.2 times the actual s.d. of the estimate and the 95% interval held
the true value 18-20 times of 20. It covers sampling variability, not bias;
``params["subsample_mean"]`` (the mean half-sample estimate) shows how the estimate
moves with ``N`` (Holmes & Nemenman's check for an estimator still biased at this
``N``). A subsample that an estimator cannot
take (say a class too rare for a probe) counts as missing.

``"near_ceiling"`` also flags a ``"binning"`` value within 5% of ``ln N``: nearly
every row in its own cell, so the value measures the sample size.

Small samples: below the method's ``min_samples`` in ``contract.estimators`` (or
what its parameters need, such as KSG's ``k + 1``, whichever is larger) the value
is ``None`` with a reason and nothing is computed; below ``low_samples`` the value
stands with the flag ``"low_samples"``. A subsample under the minimum gives no
interval.

Clipping: mutual information is non-negative, but KSG, Ross's estimator, the noisy
Monte-Carlo estimate and the InfoNCE bound can read below 0 on a finite sample
(independent data give values scattered around 0). The interval is computed around
the raw value; then a negative value or interval end is set to 0, flagged
``"clipped"``, with the raw ``{"value", "ci_low", "ci_high"}`` in
``params["unclipped"]`` (average raw values, not clipped ones, across runs:
clipping biases a mean upward).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from analysis._id_uncertainty import (
    check_int,
    checked_params,
    clip_to,
    jackknife_interval,
    sample_flags,
    sample_floor,
    subsample_indices,
    subsample_problem,
)
from analysis._mi_common import MIMemo, as_pair
from analysis._mi_methods import N_MIN, NEAR_CEILING, PREPARE, Prepared
from analysis.errors import DataError, InvalidInputError
from analysis.types import MetricValue
from contract.estimators import MI_METHODS

__all__ = ["MI_ESTIMATORS", "MIMemo", "estimate_mi"]

MI_ESTIMATORS: tuple[str, ...] = MI_METHODS


def estimate_mi(
    X: torch.Tensor,
    Y: torch.Tensor,
    method: str,
    *,
    seed: int = 0,
    metric: str = "mutual_information",
    memo: MIMemo | None = None,
    **params: Any,
) -> MetricValue:
    """Mutual information ``I(X; Y)`` in nats by the estimator named ``method``.

    Parameters
    ----------
    X : tensor of shape ``(N, ...)``, any real dtype, on any device (the work runs
        there, except the scikit-learn probe); flattened to ``(N, Dx)``.
    Y : float tensor ``(N, ...)`` (continuous, flattened to ``(N, Dy)``) or integer
        tensor ``(N,)`` (class labels); moved to ``X``'s device.
    method : one of ``MI_ESTIMATORS`` (see the module docstring).
    seed : seed of every random step (PCA, jitter, noise, critic, folds, subsamples).
    metric : the ``metric`` field of the result (e.g. ``"mi_input"``).
    memo : an ``MIMemo`` to reuse what is computed from one of the tensors alone
        (PCA, bins, distinct rows) across calls on the same tensors, such as the
        input ``X`` of every layer of one analysis; the values are the same with or
        without it. ``None``: nothing is kept.
    **params : the method's parameters (module docstring; defaults and ranges in
        ``contract.estimators``, the values used in ``params`` of the result) and,
        for every method, ``n_subsamples`` (0 for no interval),
        ``subsample_fraction`` and ``ci_level``.

    Returns
    -------
    MetricValue : ``estimator=method``, ``value`` in nats, at least 0 (``None``
        with ``reason`` when not finite or too few samples), ``ci_low``/``ci_high``
        (``None`` with ``reason`` when no interval), ``n_samples = N``;
        ``params``: every parameter used, defaults included, ``seed``,
        ``noise_model``, what the method resolved (PCA widths, the binned side,
        ``sigma``...), ``se`` and ``subsample_mean``; ``flags``
        among ``"low_samples"``, ``"clipped"`` (``params["unclipped"]`` then holds
        the raw values), ``"pca_reduced"``, ``"jittered"``, ``"near_ceiling"``,
        ``"not_converged"`` (a probe's solver stopped at its iteration cap),
        ``"cv_reduced"`` (a probe with fewer folds than ``cv``: a rare class).

    Raises
    ------
    InvalidInputError : unknown method or parameter, bad parameter value (the
        message names it), shapes that do not match, a method that cannot take this
        kind of ``Y``.
    DataError : non-finite values, degenerate data (a probe with one class,
        ``"noisy"`` on a constant representation without ``sigma``).

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(2000, 1, generator=g)
    >>> y = 0.9 * x + math.sqrt(1 - 0.81) * torch.randn(2000, 1, generator=g)
    >>> mv = estimate_mi(x, y, "ksg")  # true value -0.5 ln(1 - 0.81) = 0.830
    >>> abs(mv.value - 0.830) < 0.1, mv.ci_low < mv.value < mv.ci_high
    (True, True)
    """
    check_int(seed, "seed", None)
    if not isinstance(metric, str) or not metric:
        raise InvalidInputError(f"metric must be a non-empty string, got {metric!r}")
    p = checked_params("mi", method, params)
    X, Y, discrete = as_pair(X, Y, memo)
    N = X.shape[0]
    n_min, too_few = sample_floor("mi", method, N_MIN[method](p), N)
    if n_min > N:
        return MetricValue(
            metric=metric,
            estimator=method,
            value=None,
            n_samples=N,
            params=p | {"seed": seed},
            reason=too_few,
        )
    prep: Prepared = PREPARE[method](X, Y, discrete, p, seed, memo)
    value, details = prep.core(None)
    low, high, se, sub_mean, ci_reason = _interval(
        prep, value, N, n_min, p, seed, X.device
    )
    flags = prep.flags + details.pop("flags", []) + sample_flags("mi", method, N)
    if prep.ceiling is not None and value >= NEAR_CEILING * prep.ceiling:
        flags.append("near_ceiling")
    clipped_value, (low, high), unclipped = clip_to(value, (low, high), 0, math.inf)
    if unclipped is not None:
        flags.append("clipped")
        details["unclipped"] = unclipped
    reason = details.pop("reason", None)
    if reason is None and not math.isfinite(value):
        reason = "non-finite estimate"
    return MetricValue(
        metric=metric,
        estimator=method,
        value=clipped_value,
        ci_low=low,
        ci_high=high,
        n_samples=N,
        params=p
        | {"seed": seed, "noise_model": prep.noise_model}
        | prep.params
        | details
        | {"se": _finite(se), "subsample_mean": _finite(sub_mean)},
        reason=reason or ci_reason,
        flags=flags,
    )


def _interval(
    prep: Prepared,
    value: float,
    N: int,
    n_min: int,
    p: dict[str, Any],
    seed: int,
    device: torch.device,
) -> tuple[float, float, float, float, str | None]:
    """``(low, high, se, mean of the subsample estimates, reason if no interval)``."""
    nan = math.nan
    B, m = p["n_subsamples"], round(p["subsample_fraction"] * N)
    if B == 0:
        return nan, nan, nan, nan, "no interval: n_subsamples=0"
    if not math.isfinite(value):
        return nan, nan, nan, nan, "no interval: the estimate is not finite"
    problem = subsample_problem(m, N, n_min)
    if problem is not None:
        return nan, nan, nan, nan, problem
    thetas = [_or_nan(prep, rows) for rows in subsample_indices(N, m, B, seed, device)]
    low, high, se = jackknife_interval(value, thetas, N, m, p["ci_level"])
    finite = [t for t in thetas if math.isfinite(t)]
    sub_mean = sum(finite) / len(finite) if finite else nan
    reason = (
        None if math.isfinite(se) else "no interval: < 2 finite subsample estimates"
    )
    return low, high, se, sub_mean, reason


def _or_nan(prep: Prepared, rows: torch.Tensor) -> float:
    try:
        return prep.core(rows)[0]
    except DataError:
        return math.nan


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None
