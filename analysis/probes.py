"""Linear probes: how well a logistic regression reads class labels from a layer.

``probe_accuracy`` gives the cross-validated accuracy; the ``"probe"`` estimator of
``analysis.mutual_information.estimate_mi`` uses the same cross-validation for a
lower bound on ``I(T; Y)``.

The probe (Alain & Bengio 2016): the layer ``T`` (N, ...) is flattened; wider than
``max_dim`` units, it is first projected on its ``max_dim`` leading principal axes
(a seeded randomised PCA on ``T``'s device, fitted on all rows: it never sees the
labels, so it cannot leak them into the held-out folds). Then ``cv`` stratified
folds (shuffled with ``seed``): on each, the features are z-scored with the training
rows' statistics and a multinomial ``sklearn.linear_model.LogisticRegression``
(L2, ``C=1``, Newton-CG, at most ``max_iter=100`` iterations) is fitted and scored
on the held-out rows. Newton-CG reaches the same (convex) optimum as scikit-learn's
default L-BFGS 2-3x faster here: on 800 x 256 features and 10 classes it took
0.1-0.2 s against 0.2-0.56 s, most of L-BFGS's time being SciPy's own step.
scikit-learn runs on the CPU: the reduced features are copied there, and the
folds are fitted in as many threads as torch has (``analysis.set_threads``). A
1000 x 4096 layer (10 classes, 5 folds) took 1.2-1.7 s on one core of a busy 2-core
machine, a third of it the PCA.
"""

from __future__ import annotations

import hashlib
import math
import threading
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from analysis._id_uncertainty import check_int, clip_to, sample_flags, sample_floor
from analysis._mi_common import MIMemo, as_pair, pca_memo
from analysis.errors import DataError, InvalidInputError
from analysis.types import MetricValue
from contract.estimators import ProbeMIParams

__all__ = ["probe_accuracy"]

# The probe's defaults are those of the "probe" MI estimator, which runs the same
# cross-validation: folds, and the cap on the input width (at 256 a 1000 x 4096
# layer takes about 1 s).
_PROBE = ProbeMIParams()
DEFAULT_MAX_DIM = _PROBE.max_dim
C = 1.0
SOLVER = "newton-cg"
MAX_ITER = 100
CI_LEVEL = 0.95
# Cross-validations kept by content: the ``probe`` family and the ``probe`` MI
# estimator fit the same folds on the same layer; the second reads the first's.
# Enough for the full sample and every interval subsample of a layer in between
# (each entry is one float64 per row).
_FOLDS_KEPT = 32


@dataclass
class ProbeFolds:
    """What one cross-validation gives: per-fold accuracies, the held-out log
    probability of every row's true class, and how it was run."""

    fold_accuracies: list[float]
    log_p_true: np.ndarray  # (N,) float64, each row scored by the fold holding it out
    cv: int
    converged: bool


def probe_inputs(
    T: torch.Tensor,
    y: torch.Tensor,
    max_dim: int | None,
    seed: int,
    memo: MIMemo | None = None,
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Checked features ``(N, D')`` float64 and labels ``(N,)`` int64 as numpy, and
    the PCA width (``None`` when not reduced); the PCA through ``memo``."""
    if max_dim is not None and (
        isinstance(max_dim, bool) or not isinstance(max_dim, int) or max_dim < 1
    ):
        raise InvalidInputError(
            f"max_dim must be a positive integer or None, got {max_dim!r}"
        )
    T, y, discrete = as_pair(T, y, memo)
    if not discrete:
        raise InvalidInputError(
            "a probe needs y as integer class labels of shape (N,), got a float tensor"
        )
    q = DEFAULT_MAX_DIM if max_dim is None else max_dim
    reduced = T.shape[1] > q
    if reduced:
        T = pca_memo(memo, T, q, seed)  # (N, q)
    feats = T.to(torch.float64).cpu().numpy()
    return feats, y.cpu().numpy(), (q if reduced else None)


def folds_for(y: np.ndarray, cv: int) -> int:
    """The number of folds: ``cv``, lowered to the smallest class's size so that
    every class is in every training fold; ``DataError`` below 2."""
    if isinstance(cv, bool) or not isinstance(cv, int) or cv < 2:
        raise InvalidInputError(f"cv must be an integer >= 2, got {cv!r}")
    counts = np.unique(y, return_counts=True)[1]
    if counts.size < 2:
        raise DataError("a probe needs at least 2 classes, got 1; pass more labels")
    if counts.min() < 2:
        raise DataError(
            f"a class has {counts.min()} sample; every class needs at least 2 for "
            "held-out scoring: drop rare classes or pass more samples"
        )
    return min(cv, int(counts.min()))


class _FoldsCache:
    """The last few cross-validations, keyed by a digest of their inputs (features,
    labels, folds, seed): the same inputs give the same folds, fitted once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.kept: OrderedDict[bytes, ProbeFolds] = OrderedDict()
        self.lock = threading.Lock()

    @staticmethod
    def key(feats: np.ndarray, y: np.ndarray, cv: int, seed: int) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for a in (feats, y):
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).data)
        h.update(f"{cv}:{seed}".encode())
        return h.digest()

    def get(self, key: bytes) -> ProbeFolds | None:
        with self.lock:
            folds = self.kept.get(key)
            if folds is not None:
                self.kept.move_to_end(key)
            return folds

    def put(self, key: bytes, folds: ProbeFolds) -> None:
        with self.lock:
            self.kept[key] = folds
            while len(self.kept) > self.size:
                self.kept.popitem(last=False)


_FOLDS = _FoldsCache(_FOLDS_KEPT)


def cross_validate(feats: np.ndarray, y: np.ndarray, cv: int, seed: int) -> ProbeFolds:
    """Stratified ``cv``-fold logistic-regression probe (see the module docstring).

    The same inputs give the same folds: a repeated call returns the kept result
    (its ``log_p_true`` is read-only) instead of fitting again."""
    key = _FoldsCache.key(feats, y, cv, seed)
    folds = _FOLDS.get(key)
    if folds is None:
        folds = _cross_validate(feats, y, cv, seed)
        folds.log_p_true.setflags(write=False)
        _FOLDS.put(key, folds)
    return folds


def _cross_validate(feats: np.ndarray, y: np.ndarray, cv: int, seed: int) -> ProbeFolds:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    cv = folds_for(y, cv)
    log_p = np.empty(y.shape[0])
    splits = list(StratifiedKFold(cv, shuffle=True, random_state=seed).split(feats, y))
    # The folds are independent and scikit-learn's BLAS runs one thread (set_threads):
    # they share the process's thread budget, each fitted as alone (same numbers).
    workers = min(cv, torch.get_num_threads())
    with warnings.catch_warnings():  # the filter the worker threads read
        warnings.simplefilter("ignore", ConvergenceWarning)
        with ThreadPoolExecutor(workers) as pool:
            fits = list(pool.map(lambda s: _fit_fold(feats, y, *s), splits))
    for (_, test), (lp, _, _) in zip(splits, fits, strict=True):
        log_p[test] = lp
    accs = [acc for _, acc, _ in fits]
    return ProbeFolds(accs, log_p, cv, all(ok for _, _, ok in fits))


def _fit_fold(
    feats: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, float, bool]:
    """One fold: held-out log probability of the true class ``(n_test,)``, held-out
    accuracy, and whether the solver converged."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(feats[train])
    clf = LogisticRegression(C=C, solver=SOLVER, max_iter=MAX_ITER)
    clf.fit(scaler.transform(feats[train]), y[train])
    logits = clf.decision_function(scaler.transform(feats[test]))
    if logits.ndim == 1:  # binary: the logit of classes_[1]
        logits = np.stack([np.zeros_like(logits), logits], axis=1)
    log_softmax = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    col = np.searchsorted(clf.classes_, y[test])  # every class is in training
    acc = float(np.mean(clf.classes_[logits.argmax(axis=1)] == y[test]))
    converged = bool(np.all(clf.n_iter_ < MAX_ITER))
    return log_softmax[np.arange(test.size), col], acc, converged


def probe_accuracy(
    T: torch.Tensor,
    y: torch.Tensor,
    *,
    seed: int = 0,
    cv: int = _PROBE.cv,
    max_dim: int | None = None,
    memo: MIMemo | None = None,
) -> MetricValue:
    """Cross-validated accuracy of a logistic-regression probe reading ``y`` from ``T``.

    Parameters
    ----------
    T : tensor of shape ``(N, ...)``, any real dtype, any device; flattened.
    y : integer tensor of shape ``(N,)``, the class labels.
    seed : seed of the PCA and of the fold shuffle.
    cv : number of stratified folds (lowered to the smallest class's size, at
        least 2; ``params["cv_used"]`` says what ran, flag ``"cv_reduced"``).
    max_dim : widest input of the probe; a wider ``T`` is reduced by PCA first
        (flag ``"pca_reduced"``). ``None``: ``DEFAULT_MAX_DIM``.
    memo : an ``analysis.mutual_information.MIMemo`` that keeps the PCA of ``T``
        for other calls on it (the ``"probe"`` and ``"gaussian"`` MI estimators
        reduce a layer the same way); same values with or without it.

    Returns
    -------
    MetricValue : ``metric="probe_accuracy"``, ``estimator="logistic_regression"``,
        ``value`` the mean held-out accuracy over the folds. The interval is
        ``mean -+ t_{cv-1, 0.975} s / sqrt(cv)`` with ``s`` the s.d. of the fold
        accuracies, clipped to [0, 1] (flag ``"clipped"``, the raw ends in
        ``params["unclipped"]``); the folds share training rows, so it
        understates the variance somewhat (Bengio & Grandvalet 2004).
        ``params``: ``seed, cv, cv_used, max_dim, n_components`` (PCA width or
        ``None``), ``C, solver, max_iter, standardize, ci_level, n_classes``,
        ``chance`` (the majority class's share) and ``fold_accuracies``. Flag
        ``"not_converged"`` when the solver stopped at ``max_iter`` in some fold.
        Sample counts are those of the ``"probe"`` MI estimator in
        ``contract.estimators``: below its ``min_samples`` the value is ``None``
        with a reason; below its ``low_samples`` the flag ``"low_samples"``.

    Raises
    ------
    InvalidInputError : float ``y``, mismatched lengths, bad ``cv``/``max_dim``.
    DataError : non-finite ``T``, a single class, a class with one sample.

    Example
    -------
    >>> T = torch.randn(200, 8); y = (T[:, 0] > 0).long()
    >>> probe_accuracy(T, y).value > 0.9
    True
    """
    from scipy.special import stdtrit

    check_int(seed, "seed", None)
    feats, labels, n_comp = probe_inputs(T, y, max_dim, seed, memo)
    N = int(labels.shape[0])
    n_min, too_few = sample_floor("mi", "probe", 0, N)
    if n_min > N:
        return MetricValue(
            metric="probe_accuracy",
            estimator="logistic_regression",
            value=None,
            n_samples=N,
            params={"seed": seed, "cv": cv, "max_dim": max_dim or DEFAULT_MAX_DIM},
            reason=too_few,
        )
    folds = cross_validate(feats, labels, cv, seed)
    acc = np.asarray(folds.fold_accuracies)
    mean = float(acc.mean())
    half = (
        float(stdtrit(folds.cv - 1, (1 + CI_LEVEL) / 2))
        * float(acc.std(ddof=1))
        / math.sqrt(folds.cv)
    )
    value, (low, high), unclipped = clip_to(mean, (mean - half, mean + half), 0, 1)
    counts = np.unique(labels, return_counts=True)[1]
    flags = [
        f
        for f, on in (
            ("pca_reduced", n_comp is not None),
            ("cv_reduced", folds.cv < cv),
            ("not_converged", not folds.converged),
            ("clipped", unclipped is not None),
        )
        if on
    ] + sample_flags("mi", "probe", N)
    return MetricValue(
        metric="probe_accuracy",
        estimator="logistic_regression",
        value=value,
        ci_low=low,
        ci_high=high,
        n_samples=N,
        params={
            "seed": seed,
            "cv": cv,
            "cv_used": folds.cv,
            "max_dim": DEFAULT_MAX_DIM if max_dim is None else max_dim,
            "n_components": n_comp,
            "C": C,
            "solver": SOLVER,
            "max_iter": MAX_ITER,
            "standardize": True,
            "ci_level": CI_LEVEL,
            "n_classes": int(counts.size),
            "chance": float(counts.max() / counts.sum()),
            "fold_accuracies": folds.fold_accuracies,
        }
        | ({"unclipped": unclipped} if unclipped else {}),
        flags=flags,
    )
