"""Shared pieces of the mutual-information estimators (private; public through
``analysis.mutual_information``): input checks, standardisation, a seeded PCA and
plug-in entropies."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from analysis._id_uncertainty import as_matrix
from analysis.errors import InvalidInputError

# Power iterations of the randomised PCA: with 10 oversampling columns, enough for the
# leading subspace of activations, whose spectra decay.
_POWER_ITERS = 3
_OVERSAMPLE = 10


def subseed(seed: int, purpose: str) -> int:
    """A seed for one random step, derived from the user's ``seed`` and the step's
    name: independent streams per step, and none equal to ``seed`` itself (data drawn
    with ``manual_seed(seed)`` would otherwise meet identical noise)."""
    digest = hashlib.blake2b(f"{seed}:{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def as_pair(X: Any, Y: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(X (N, Dx), Y, discrete)``: ``X`` flattened and finite; ``Y`` either class
    labels (an integer or bool tensor of shape ``(N,)`` or ``(N, 1)``, returned as
    int64 ``(N,)``) or continuous (returned as ``(N, Dy)``); both on ``X``'s device."""
    X = as_matrix(X)
    Y = torch.as_tensor(Y)
    if Y.ndim == 0 or Y.shape[0] != X.shape[0]:
        raise InvalidInputError(
            f"X and Y must hold the same number of samples along dim 0, got "
            f"X {tuple(X.shape)} and Y {tuple(Y.shape)}"
        )
    Y = Y.to(X.device)
    discrete = not Y.is_floating_point() and not Y.is_complex()
    if not discrete:
        return X, as_matrix(Y), False
    if Y.ndim > 2 or (Y.ndim == 2 and Y.shape[1] != 1):
        raise InvalidInputError(
            f"integer Y is read as class labels and must have shape (N,), got "
            f"{tuple(Y.shape)}; pass a float tensor for a continuous Y"
        )
    return X, Y.reshape(-1).to(torch.int64), True


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
    float32 unless ``X`` is float64."""
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
    Vt = torch.linalg.svd(B, full_matrices=False).Vh[:q]  # (q, D)
    return Xc.to(torch.float64) @ Vt.T  # (N, q)


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
