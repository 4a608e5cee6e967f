"""Shared pieces of the mutual-information estimators (private; public through
``analysis.mutual_information``): input checks, standardisation, a seeded PCA,
plug-in entropies, and the memo of what is computed from one tensor alone."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from analysis._id_uncertainty import as_matrix
from analysis._memo import TensorMemo
from analysis.errors import InvalidInputError

# Power iterations of the randomised PCA: with 10 oversampling columns, enough for the
# leading subspace of activations, whose spectra decay.
_POWER_ITERS = 3
_OVERSAMPLE = 10
# Entries a memo keeps: a layer leaves about five (two PCAs, its bins...), the input
# X as many, refreshed by every layer.
_MEMO_SIZE = 16

V = TypeVar("V")


class MIMemo(TensorMemo):
    """What the estimators compute from one tensor alone (its PCA, its bins, the ids
    of its distinct rows, ...), kept for the next call on the same tensor.

    Within one analysis the input ``X`` of ``I(X; T)`` is the same for every layer,
    and one layer's PCA serves several estimators (``gaussian``, ``probe`` and the
    probe family share the 256-wide one); pass one memo to all those calls. Keys
    are the tensor and the purpose with its parameters (``TensorMemo``). The last
    ``size`` entries are kept. A memo belongs to its owner (the pipeline keeps one
    per analysis in ``Context.cache``); nothing is kept between calls made without
    one.
    """

    def __init__(self, size: int = _MEMO_SIZE) -> None:
        super().__init__(size)


def remember(
    memo: MIMemo | None, A: torch.Tensor, purpose: tuple, compute: Callable[[], V]
) -> V:
    """``compute()`` through ``memo`` when there is one."""
    return compute() if memo is None else memo.get(A, purpose, compute)


def subseed(seed: int, purpose: str) -> int:
    """A seed for one random step, derived from the user's ``seed`` and the step's
    name: independent streams per step, and none equal to ``seed`` itself (data drawn
    with ``manual_seed(seed)`` would otherwise meet identical noise)."""
    digest = hashlib.blake2b(f"{seed}:{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def as_pair(
    X: Any, Y: Any, memo: MIMemo | None = None
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(X (N, Dx), Y, discrete)``: ``X`` flattened and finite; ``Y`` either class
    labels (an integer or bool tensor of shape ``(N,)`` or ``(N, 1)``, returned as
    int64 ``(N,)``) or continuous (returned as ``(N, Dy)``); both on ``X``'s device.
    With a ``memo`` a tensor is checked once (the check reads every value: 0.07 s
    for 2000 x 4096), not at every call."""
    X = _matrix(X, memo)
    Y = torch.as_tensor(Y)
    if Y.ndim == 0 or Y.shape[0] != X.shape[0]:
        raise InvalidInputError(
            f"X and Y must hold the same number of samples along dim 0, got "
            f"X {tuple(X.shape)} and Y {tuple(Y.shape)}"
        )
    Y = Y.to(X.device)
    discrete = not Y.is_floating_point() and not Y.is_complex()
    if not discrete:
        return X, _matrix(Y, memo), False
    if Y.ndim > 2 or (Y.ndim == 2 and Y.shape[1] != 1):
        raise InvalidInputError(
            f"integer Y is read as class labels and must have shape (N,), got "
            f"{tuple(Y.shape)}; pass a float tensor for a continuous Y"
        )
    return X, Y.reshape(-1).to(torch.int64), True


def _matrix(A: Any, memo: MIMemo | None) -> torch.Tensor:
    if memo is None or not isinstance(A, torch.Tensor):
        return as_matrix(A)
    return memo.get(A, ("as_matrix",), lambda: as_matrix(A))


def standardize(X: torch.Tensor) -> torch.Tensor:
    """Columns z-scored in float64; constant columns are only centred."""
    X = X.to(torch.float64)
    Xc = X - X.mean(dim=0)  # (N, D)
    std = Xc.std(dim=0)
    return Xc / torch.where(std > 0, std, torch.ones_like(std))


def pca_reduce(X: torch.Tensor, q: int, seed: int) -> torch.Tensor:
    """The centred rows of ``X`` (N, D) projected on their ``q`` leading principal
    axes, ``(N, q)``, by a seeded randomised SVD (Halko, Martinsson & Tropp 2011,
    Alg. 4.4: Gaussian test matrix of ``q + 10`` columns drawn on the CPU from
    ``seed``, 3 power iterations with QR re-orthonormalisation). Products run in
    float32 unless ``X`` is float64. Each axis's sign makes its largest-magnitude
    loading positive (scikit-learn's ``svd_flip``), whatever the LAPACK build."""
    N, D = X.shape
    dtype = torch.float64 if X.dtype == torch.float64 else torch.float32
    Xc = X.to(dtype) - X.mean(dim=0, dtype=torch.float64).to(dtype)  # (N, D)
    r = min(q + _OVERSAMPLE, N, D)
    g = torch.Generator().manual_seed(subseed(seed, "pca"))
    omega = torch.randn(D, r, generator=g, dtype=dtype).to(X.device)  # (D, r)
    Q = torch.linalg.qr(Xc @ omega).Q  # (N, r)
    for _ in range(_POWER_ITERS):
        Q = torch.linalg.qr(Xc.T @ Q).Q  # (D, r)
        Q = torch.linalg.qr(Xc @ Q).Q  # (N, r)
    B = (Q.T @ Xc).to(torch.float64)  # (r, D)
    # B's right singular vectors through the small R of B^T = Qb R: B = R^T Qb^T, so
    # svd(R^T) = W S Uh gives Vh = Uh Qb^T. The same factors as svd(B), which took
    # 0.56 s of CPU against 0.11 s at r=266, D=4096 (MKL, one thread).
    Qb, R = torch.linalg.qr(B.T)  # (D, r), (r, r)
    Vt = torch.linalg.svd(R.T).Vh[:q] @ Qb.T  # (q, D)
    pick = Vt.abs().argmax(dim=1, keepdim=True)  # (q, 1)
    Vt = Vt * Vt.gather(1, pick).sign()
    return Xc.to(torch.float64) @ Vt.T  # (N, q)


def pca_memo(memo: MIMemo | None, A: torch.Tensor, q: int, seed: int) -> torch.Tensor:
    """``pca_reduce(A, q, seed)`` through ``memo``."""
    return remember(memo, A, ("pca", q, seed), lambda: pca_reduce(A, q, seed))


def entropy_of_ids(ids: torch.Tensor) -> float:
    """Plug-in entropy (nats) of the empirical distribution of integer ids ``(N,)``."""
    counts = torch.unique(ids, return_counts=True)[1].to(torch.float64)
    p = counts / counts.sum()
    return float(-(p * p.log()).sum())


def row_ids(A: torch.Tensor) -> torch.Tensor:
    """int64 ``(N,)`` ids of the distinct rows of ``A`` (N, D): equal rows, equal id."""
    if A.ndim == 1:
        A = A.unsqueeze(1)
    # "+ 0" turns -0.0 into 0.0 so that unique() sees them as equal.
    A = A + 0 if A.is_floating_point() else A
    return torch.unique(A, dim=0, return_inverse=True)[1]


def joint_ids(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Ids of the pairs ``(a_i, b_i)`` of two id vectors."""
    return row_ids(torch.stack([a, b], dim=1))
