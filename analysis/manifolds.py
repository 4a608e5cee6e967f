"""Points sampled from manifolds of known intrinsic dimension.

These are the oracles of the intrinsic-dimension tests and benchmarks: a sample of
``n`` points from a ``d``-dimensional manifold, embedded isometrically into ``R^D`` by
a seeded random orthonormal map, plus optional isotropic Gaussian noise.

| name          | manifold                                        | ambient dim |
|---------------|-------------------------------------------------|-------------|
| ``linear``    | uniform in the unit cube ``[0, 1]^d``           | ``d``       |
| ``gaussian``  | standard normal ``N(0, I_d)``                   | ``d``       |
| ``sphere``    | uniform on the unit sphere ``S^d``              | ``d + 1``   |
| ``torus``     | flat torus ``(S^1)^d``, product of unit circles | ``2 d``     |
| ``swiss_roll``| Swiss roll (``d`` must be 2)                    | ``3``       |
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from analysis.errors import InvalidInputError

__all__ = ["MANIFOLDS", "ambient_dimension", "make_manifold"]

MANIFOLDS: tuple[str, ...] = ("linear", "gaussian", "sphere", "torus", "swiss_roll")


def _linear(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, d, generator=g, dtype=torch.float64)  # (n, d)


def _gaussian(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(n, d, generator=g, dtype=torch.float64)  # (n, d)


def _sphere(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    # A normalised isotropic Gaussian is uniform on the sphere.
    z = torch.randn(n, d + 1, generator=g, dtype=torch.float64)  # (n, d+1)
    norm = z.norm(dim=1, keepdim=True)
    # A zero vector has probability zero; guard it anyway so no NaN can appear.
    z[norm.squeeze(1) == 0, 0] = 1.0
    return z / z.norm(dim=1, keepdim=True)


def _torus(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    theta = 2 * math.pi * torch.rand(n, d, generator=g, dtype=torch.float64)
    return torch.cat([theta.cos(), theta.sin()], dim=1)  # (n, 2d)


def _swiss_roll(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    # scikit-learn's parametrisation: t in [1.5 pi, 4.5 pi], height in [0, 21].
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    t = 1.5 * math.pi * (1 + 2 * u[:, 0])
    h = 21.0 * u[:, 1]
    return torch.stack([t * t.cos(), h, t * t.sin()], dim=1)  # (n, 3)


_SAMPLERS: dict[
    str, tuple[Callable[[int, int, torch.Generator], torch.Tensor], str]
] = {
    "linear": (_linear, "d"),
    "gaussian": (_gaussian, "d"),
    "sphere": (_sphere, "d+1"),
    "torus": (_torus, "2d"),
    "swiss_roll": (_swiss_roll, "3"),
}


def ambient_dimension(name: str, d: int) -> int:
    """Dimension of the space the manifold ``name`` of dimension ``d`` lives in.

    Parameters
    ----------
    name : one of ``MANIFOLDS``.
    d : intrinsic dimension.

    Returns
    -------
    int : ``d`` for linear/gaussian, ``d + 1`` for sphere, ``2 d`` for torus, 3 for
    swiss_roll. ``make_manifold`` needs ``D`` at least this large.

    Example
    -------
    >>> ambient_dimension("sphere", 2)
    3
    """
    _check_name(name)
    return {"d": d, "d+1": d + 1, "2d": 2 * d, "3": 3}[_SAMPLERS[name][1]]


def _check_name(name: str) -> None:
    if name not in _SAMPLERS:
        raise InvalidInputError(
            f"unknown manifold {name!r}; choose one of {', '.join(MANIFOLDS)}"
        )


def _check_int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(
            f"{what} must be an integer, got {type(value).__name__} {value!r}"
        )
    if value < minimum:
        raise InvalidInputError(f"{what} must be at least {minimum}, got {value}")
    return value


def make_manifold(
    name: str, n: int, d: int, D: int, noise: float = 0.0, seed: int = 0
) -> torch.Tensor:
    """Sample ``n`` points of a ``d``-dimensional manifold embedded in ``R^D``.

    The manifold is sampled in its ambient space (see ``ambient_dimension``), mapped
    into ``R^D`` by a random orthonormal map (an isometry, so distances and the
    intrinsic dimension are kept), and isotropic Gaussian noise of standard deviation
    ``noise`` is added in ``R^D``. Everything is drawn from one ``torch.Generator``
    seeded with ``seed``: the same arguments give the same tensor on every machine.

    Parameters
    ----------
    name : one of ``MANIFOLDS``: ``"linear"`` (uniform in ``[0, 1]^d``),
        ``"gaussian"`` (``N(0, I_d)``), ``"sphere"`` (uniform on the unit ``S^d``
        in ``R^{d+1}``), ``"torus"`` (flat torus ``(S^1)^d`` in ``R^{2d}``),
        ``"swiss_roll"`` (``d`` must be 2; in ``R^3``).
    n : number of points, at least 1.
    d : intrinsic dimension, at least 1.
    D : embedding dimension, at least the ambient dimension of the manifold.
    noise : standard deviation of the isotropic Gaussian noise added in ``R^D``
        (0 for points exactly on the manifold).
    seed : seed of the generator.

    Returns
    -------
    torch.Tensor : float32 of shape ``(n, D)``, on the CPU.

    Raises
    ------
    InvalidInputError : unknown name, ``n < 1``, ``d < 1``, ``D`` smaller than the
        ambient dimension, ``d != 2`` for the Swiss roll, negative or non-finite noise.

    Example
    -------
    >>> X = make_manifold("sphere", n=1000, d=2, D=64, seed=0)
    >>> X.shape, X.dtype
    (torch.Size([1000, 64]), torch.float32)
    """
    _check_name(name)
    _check_int(n, "n (number of points)", 1)
    _check_int(d, "d (intrinsic dimension)", 1)
    _check_int(D, "D (embedding dimension)", 1)
    _check_int(seed, "seed", -(2**63))
    if name == "swiss_roll" and d != 2:
        raise InvalidInputError(
            f"the swiss_roll is a 2-dimensional manifold: pass d=2, got d={d}"
        )
    ambient = ambient_dimension(name, d)
    if ambient > D:
        raise InvalidInputError(
            f"manifold {name!r} with d={d} lives in R^{ambient}: pass D >= {ambient}, "
            f"got D={D}"
        )
    noise = float(noise)
    if not math.isfinite(noise) or noise < 0:
        raise InvalidInputError(f"noise must be a finite number >= 0, got {noise}")

    g = torch.Generator().manual_seed(seed)
    Z = _SAMPLERS[name][0](n, d, g)  # (n, ambient)
    # Random orthonormal columns: QR of a Gaussian matrix, signs fixed so Q is unique.
    Q, R = torch.linalg.qr(torch.randn(D, ambient, generator=g, dtype=torch.float64))
    Q = Q * torch.sign(torch.diagonal(R)).where(torch.diagonal(R) != 0, 1.0)
    X = Z @ Q.T  # (n, D)
    if noise > 0:
        X = X + noise * torch.randn(n, D, generator=g, dtype=torch.float64)
    return X.to(torch.float32)
