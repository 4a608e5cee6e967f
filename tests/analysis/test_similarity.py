"""Linear CKA and minibatch CKA against their invariances and closed forms.

Seeds fixed per test; tolerances stated next to each assertion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.errors import DataError, InvalidInputError
from analysis.similarity import cka_matrix, linear_cka, plot_cka


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=_gen(seed), dtype=torch.float64))
    return q


@pytest.mark.parametrize(("n", "d"), [(500, 20), (40, 300)])  # feature / Gram form
def test_linear_cka_invariances(n: int, d: int) -> None:
    X = torch.randn(n, d, generator=_gen(1))
    Q = _orthogonal(d, 2).float()
    assert linear_cka(X, X @ Q) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(X, -3.5 * X) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(X, X + 7.0) == pytest.approx(1.0, abs=1e-9)  # centred
    Y = torch.randn(n, d // 2 + 1, generator=_gen(3))
    assert linear_cka(X, Y) == pytest.approx(linear_cka(Y, X), abs=1e-12)
    # not invariant to an arbitrary invertible map
    A = torch.randn(d, d, generator=_gen(4)) + 3 * torch.eye(d)
    assert linear_cka(X, X @ A) < 0.999


def test_linear_cka_matches_its_formula_and_flattens() -> None:
    X = torch.randn(64, 2, 3, 4, generator=_gen(5))
    Y = torch.randn(64, 7, generator=_gen(6))
    x = X.reshape(64, -1).double().numpy()
    y = Y.double().numpy()
    x, y = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(y.T @ x) ** 2 / (
        np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    )
    assert linear_cka(X, Y) == pytest.approx(expected, rel=1e-12)


def test_linear_cka_near_zero_for_independent_features() -> None:
    """N = 2000, 32 + 32 independent Gaussian features: expected ~ sqrt(pq)/N."""
    X = torch.randn(2000, 32, generator=_gen(7))
    Y = torch.randn(2000, 32, generator=_gen(8))
    assert linear_cka(X, Y) < 0.05


def test_linear_cka_errors() -> None:
    with pytest.raises(DataError):
        linear_cka(torch.ones(10, 3), torch.randn(10, 3))
    with pytest.raises(DataError):
        linear_cka(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(InvalidInputError):
        linear_cka(torch.randn(10, 3), torch.randn(9, 3))


def _hsic_unbiased_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al. 2012, eq. 5, written out with explicit matrices."""
    n = len(x)
    K, L = x @ x.T, y @ y.T
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return float(
        (
            np.trace(K @ L)
            + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one @ K @ L @ one)
        )
        / (n * (n - 3))
    )


def test_cka_matrix_one_batch_matches_the_unbiased_formula() -> None:
    a = torch.randn(50, 6, generator=_gen(9), dtype=torch.float64)
    b = a[:, :3] @ torch.randn(3, 4, generator=_gen(10), dtype=torch.float64)
    b = b + 0.5 * torch.randn(50, 4, generator=_gen(11), dtype=torch.float64)
    names, M = cka_matrix({"a": a, "b": b}, batch_size=256)  # N < n: one batch
    x, y = a.numpy(), b.numpy()
    expected = _hsic_unbiased_numpy(x, y) / np.sqrt(
        _hsic_unbiased_numpy(x, x) * _hsic_unbiased_numpy(y, y)
    )
    assert names == ["a", "b"]
    assert float(M[0, 1]) == pytest.approx(expected, rel=1e-10)


def test_cka_matrix_close_to_full_cka_on_large_n() -> None:
    """N = 8192, batch 256 (32 minibatches): within 0.02 of the full linear CKA."""
    n = 8192
    X = torch.randn(n, 20, generator=_gen(12))
    Y = X[:, :10] @ torch.randn(10, 15, generator=_gen(13))
    Y = Y + 2.0 * torch.randn(n, 15, generator=_gen(14))
    Z = torch.randn(n, 12, generator=_gen(15))
    _, M = cka_matrix({"x": X, "y": Y, "z": Z}, batch_size=256, seed=0)
    full = linear_cka(X, Y)
    assert 0.2 < full < 0.9  # a pair that is neither unrelated nor identical
    assert float(M[0, 1]) == pytest.approx(full, abs=0.02)
    assert abs(float(M[0, 2])) < 0.02 and abs(float(M[1, 2])) < 0.02


def test_cka_matrix_symmetric_unit_diagonal_and_invariant() -> None:
    X = torch.randn(600, 16, generator=_gen(16))
    layers = {
        "x": X,
        "rotated": X @ _orthogonal(16, 17).float(),
        "scaled": 0.01 * X,
        "conv": torch.randn(600, 2, 3, 3, generator=_gen(18)),
        "half": X[:, :8],
    }
    names, M = cka_matrix(layers, batch_size=128, seed=3)
    assert names == list(layers)
    assert M.shape == (5, 5) and M.dtype == torch.float64
    assert torch.equal(M, M.T)
    assert torch.equal(M.diagonal(), torch.ones(5, dtype=torch.float64))
    assert float(M[0, 1]) == pytest.approx(1.0, abs=1e-6)
    assert float(M[0, 2]) == pytest.approx(1.0, abs=1e-9)
    assert float(M[0, 4]) < 0.9  # half the features is not the same layer
    # the seed only changes the minibatches
    _, again = cka_matrix(layers, batch_size=128, seed=3)
    assert torch.equal(M, again)


def test_cka_matrix_constant_layer_is_nan_and_bad_input() -> None:
    layers = {"x": torch.randn(40, 5, generator=_gen(19)), "dead": torch.ones(40, 5)}
    _, M = cka_matrix(layers, batch_size=8)
    assert float(M[0, 0]) == 1.0
    assert torch.isnan(M[1]).all() and torch.isnan(M[:, 1]).all()
    with pytest.raises(InvalidInputError):
        cka_matrix({"a": torch.randn(10, 2), "b": torch.randn(11, 2)})
    with pytest.raises(InvalidInputError):
        cka_matrix({"a": torch.randn(10, 2)}, batch_size=3)
    with pytest.raises(DataError):
        cka_matrix({"a": torch.randn(3, 2)})


def test_plot_cka_writes_a_png(tmp_path: Path) -> None:
    layers = {f"layer{i}.conv": torch.randn(64, 4, generator=_gen(i)) for i in range(5)}
    layers["dead"] = torch.zeros(64, 4)
    names, M = cka_matrix(layers, batch_size=16)
    path = plot_cka(names, M, tmp_path / "cka.png")
    assert path == tmp_path / "cka.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    many = [f"block{i}.relu" for i in range(60)]
    plot_cka(many, torch.eye(60), tmp_path / "big.png")
    assert (tmp_path / "big.png").stat().st_size > 0
    with pytest.raises(InvalidInputError):
        plot_cka(names[:2], M, tmp_path / "bad.png")
