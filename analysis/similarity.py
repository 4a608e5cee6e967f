"""Layer similarity by centred kernel alignment (CKA) with a linear kernel.

:func:`linear_cka` compares two representations of the same N samples
(Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited").
It is invariant to orthogonal transforms and isotropic scaling of either side and
not to arbitrary invertible linear maps. :func:`cka_matrix` compares every pair of
layers with the minibatch estimator of Nguyen et al. 2021 ("Do Wide and Deep
Networks Learn the Same Things?"), whose memory does not grow with N^2.
:func:`plot_cka` draws the matrix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from matplotlib import colormaps
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from analysis.errors import DataError, InvalidInputError

__all__ = ["cka_matrix", "linear_cka", "plot_cka"]


def linear_cka(X: torch.Tensor, Y: torch.Tensor) -> float:
    """Linear CKA between two representations of the same samples.

    ``CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with ``Xc``,
    ``Yc`` the column-centred matrices (Kornblith et al. 2019, eq. 5 with a
    linear kernel). Computed in float64 on ``X``'s device, in the feature form
    (p x q products) or the Gram form (N x N) whichever is cheaper.

    Parameters
    ----------
    X, Y:
        (N, ...) each, flattened per sample to (N, p) and (N, q); same N >= 2.

    Returns
    -------
    float
        In [0, 1]; 1 for ``Y = c X Q`` (Q orthogonal, c != 0).

    Raises
    ------
    DataError
        Fewer than 2 samples, or one side constant over the samples.

    Example
    -------
    >>> linear_cka(h1, h1 @ torch.linalg.qr(torch.randn(64, 64))[0])  # 1.0
    """
    Xc, Yc = _centred(X, Y)
    n, p = Xc.shape
    q = Yc.shape[1]
    if n * n * (p + q) < n * (p * q + p * p + q * q):
        K, L = Xc @ Xc.T, Yc @ Yc.T  # (N, N) each
        cross, xx, yy = (K * L).sum(), (K * K).sum(), (L * L).sum()
    else:
        cross = (Yc.T @ Xc).square().sum()  # ||Yc^T Xc||_F^2
        xx = (Xc.T @ Xc).square().sum()
        yy = (Yc.T @ Yc).square().sum()
    if xx <= 0 or yy <= 0:
        raise DataError("linear CKA is undefined for a representation that is constant")
    return float(cross / (xx.sqrt() * yy.sqrt()))


def cka_matrix(
    activations: Mapping[str, torch.Tensor],
    *,
    batch_size: int = 256,
    seed: int = 0,
) -> tuple[list[str], torch.Tensor]:
    """Minibatch linear CKA between every pair of layers (Nguyen et al. 2021).

    The samples are shuffled once (``seed``) and cut into ``N // batch_size``
    minibatches of nearly equal size (each at least ``batch_size``; all samples
    used). On each minibatch every layer's Gram matrix ``K = X X^T`` (n x n) is
    formed and the unbiased HSIC estimator (Song et al. 2012) is taken for every
    pair::

        HSIC_1(K, L) = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2))
                        - 2/(n-2) 1^T K~ L~ 1] / (n (n-3))

    with ``K~`` the Gram matrix with its diagonal zeroed. Averaged over
    minibatches, ``CKA(i, j) = mean HSIC_1(K_i, K_j) / sqrt(mean HSIC_1(K_i, K_i)
    mean HSIC_1(K_j, K_j))``. Memory: L Gram matrices of one minibatch (L n^2
    float64) on top of the activations; time O(N n (sum of widths) + N n L^2).

    The estimate converges to the population CKA as N grows; it is not biased
    towards 1 at small N as the full-batch (biased HSIC) :func:`linear_cka` is,
    and it can fall slightly below 0 for unrelated layers.

    Parameters
    ----------
    activations:
        Layer name -> (N, ...) tensor, same N >= 4 for all; e.g.
        ``Capture.activations``. Computed on the first tensor's device.
    batch_size:
        Minibatch size n (>= 4); a smaller N gives one batch of all samples.
    seed:
        Seed of the shuffle.

    Returns
    -------
    (names, matrix)
        The names in the mapping's order and a symmetric (L, L) float64 tensor on
        the CPU with ones on the diagonal. A layer constant on every minibatch gets
        NaN in its row and column (and diagonal).

    Example
    -------
    >>> names, M = cka_matrix(capture(net, x).activations, batch_size=256)
    """
    names = list(activations)
    if not names:
        raise InvalidInputError("cka_matrix needs at least one layer")
    if batch_size < 4:
        raise InvalidInputError(f"batch_size must be >= 4, got {batch_size}")
    first = activations[names[0]]
    n_total = len(first)
    if any(len(activations[k]) != n_total for k in names):
        raise InvalidInputError("every layer must hold the same samples (same N)")
    if n_total < 4:
        raise DataError(f"minibatch CKA needs at least 4 samples, got {n_total}")
    device = first.device
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_total, generator=gen)
    batches = order.tensor_split(max(1, n_total // batch_size))
    L = len(names)
    hsic = torch.zeros(L, L, dtype=torch.float64, device=device)
    power = torch.zeros(L, dtype=torch.float64, device=device)
    for rows in batches:
        h, p = _hsic_unbiased(
            [activations[k][rows.to(activations[k].device)] for k in names], device
        )
        hsic += h
        power += p
    hsic /= len(batches)
    # a constant layer has HSIC_1(K, K) = 0 exactly; in floating point, a tiny
    # fraction of the Gram matrix's own size
    dead = hsic.diagonal() <= 1e-10 * power / len(batches)
    scale = hsic.diagonal().clamp_min(0).sqrt()  # (L,)
    matrix = hsic / (scale[:, None] * scale[None, :])
    matrix = (matrix + matrix.T) / 2
    matrix.fill_diagonal_(1.0)
    matrix[dead, :] = math.nan
    matrix[:, dead] = math.nan
    return names, matrix.cpu()


def plot_cka(names: list[str], matrix: torch.Tensor, path: str | Path) -> Path:
    """Draw ``matrix`` (L, L) as a heat map labelled with ``names``; save a PNG.

    Colour scale fixed to [0, 1] (magma); NaN cells grey; the value is printed
    in each cell when L <= 12. Cells are 0.3 in (at most 20 in for all of
    them), the names' font follows the cell size (4-9 pt) and the margins
    follow the longest name. Uses matplotlib's Agg canvas without
    pyplot (no global backend change).

    Returns
    -------
    Path
        ``path``, written.
    """
    m = matrix.detach().double().cpu()
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(names):
        raise InvalidInputError(
            f"matrix must be ({len(names)}, {len(names)}) for {len(names)} names, "
            f"got {tuple(m.shape)}"
        )
    L = len(names)
    cell = min(0.3, 20.0 / max(L, 1))  # inches per cell; at most 20 in of cells
    font = max(4.0, min(9.0, cell * 72 * 0.45))
    label = max((len(n) for n in names), default=1) * font * 0.6 / 72 + 0.3
    grid = max(2.5, L * cell)
    fig = Figure(figsize=(grid + label + 1.4, grid + label + 0.5), dpi=100)
    ax = fig.add_subplot()
    cmap = _cmap()
    image = ax.imshow(m.numpy(), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(L), names, rotation=90, fontsize=font)
    ax.set_yticks(range(L), names, fontsize=font)
    if L <= 12:
        for i in range(L):
            for j in range(L):
                v = float(m[i, j])
                if math.isfinite(v):
                    colour = "black" if v > 0.6 else "white"
                    ax.text(
                        j,
                        i,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=font,
                        color=colour,
                    )
    ax.set_title("linear CKA (minibatch)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    return out


def _cmap() -> Colormap:
    return colormaps["magma"].with_extremes(bad="0.75")


def _centred(X: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(X, torch.Tensor) or not isinstance(Y, torch.Tensor):
        raise InvalidInputError("linear_cka takes two tensors (N, ...)")
    if X.ndim < 1 or Y.ndim < 1 or len(X) != len(Y):
        raise InvalidInputError(
            f"X and Y must hold the same samples, got {tuple(X.shape)} and "
            f"{tuple(Y.shape)}"
        )
    if len(X) < 2:
        raise DataError("linear CKA needs at least 2 samples")
    Xd = X.detach().reshape(len(X), -1).to(torch.float64)  # (N, p)
    Yd = Y.detach().reshape(len(Y), -1).to(X.device, torch.float64)  # (N, q)
    return Xd - Xd.mean(0), Yd - Yd.mean(0)


def _hsic_unbiased(
    layers: list[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, L) unbiased HSIC of every pair on one minibatch of n >= 4 samples,
    and (L,) the mean squared off-diagonal Gram entry of each layer."""
    grams = []
    for h in layers:
        z = h.reshape(len(h), -1).to(device)  # (n, p)
        if z.dtype != torch.float64:
            # The estimate does not change when a constant is added to every row's
            # features; centred, the float32 product has no cancellation (1e-9
            # relative against float64 here) and runs at twice float64's rate.
            z = (z - z.mean(0, dtype=torch.float64).to(z.dtype)).float()
        K = (z @ z.T).to(torch.float64)  # (n, n)
        K.fill_diagonal_(0.0)  # K~
        grams.append(K)
    n = grams[0].shape[0]
    G = torch.stack(grams).reshape(len(grams), -1)  # (L, n*n)
    rows = torch.stack([K.sum(1) for K in grams])  # (L, n): K~ 1
    totals = rows.sum(1)  # (L,): 1^T K~ 1
    trace = G @ G.T  # tr(K~ L~) for symmetric K~, L~
    middle = torch.outer(totals, totals) / ((n - 1) * (n - 2))
    cross = rows @ rows.T  # 1^T K~ L~ 1
    hsic = (trace + middle - 2.0 / (n - 2) * cross) / (n * (n - 3))
    return hsic, trace.diagonal() / (n * (n - 1))
