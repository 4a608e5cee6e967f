"""Synthetic manifolds: shapes, determinism, geometry, noise and argument checks."""

import math

import pytest
import torch

from analysis.errors import InvalidInputError
from analysis.manifolds import MANIFOLDS, ambient_dimension, make_manifold


def _d_for(name: str) -> int:
    return 2 if name == "swiss_roll" else 3


@pytest.mark.parametrize("name", MANIFOLDS)
def test_shape_dtype_and_determinism(name):
    X = make_manifold(name, n=50, d=_d_for(name), D=12, noise=0.01, seed=7)
    assert X.shape == (50, 12)
    assert X.dtype == torch.float32
    assert torch.isfinite(X).all()
    assert torch.equal(X, make_manifold(name, 50, _d_for(name), 12, 0.01, 7))
    assert not torch.equal(X, make_manifold(name, 50, _d_for(name), 12, 0.01, 8))


@pytest.mark.parametrize("name", MANIFOLDS)
def test_points_span_the_ambient_dimension_only(name):
    # The orthonormal embedding keeps the rank: singular values past the ambient
    # dimension are float32 rounding (relative 1e-5 allows for it).
    d = _d_for(name)
    X = make_manifold(name, n=400, d=d, D=20, seed=0).double()
    s = torch.linalg.svdvals(X - X.mean(0))
    a = ambient_dimension(name, d)
    assert s[a - 1] / s[0] > 1e-2
    assert s[a] / s[0] < 1e-5


def test_sphere_and_torus_norms_are_kept_by_the_embedding():
    # An isometry keeps norms: unit sphere -> 1, product of d unit circles -> sqrt(d).
    S = make_manifold("sphere", n=300, d=4, D=30, seed=1)
    torch.testing.assert_close(S.norm(dim=1), torch.ones(300), atol=1e-5, rtol=0)
    T = make_manifold("torus", n=300, d=3, D=30, seed=1)
    torch.testing.assert_close(
        T.norm(dim=1), torch.full((300,), math.sqrt(3.0)), atol=1e-5, rtol=0
    )


def test_linear_is_a_unit_cube_and_gaussian_is_standard():
    # Cube coordinates are uniform on [0, 1]: the squared norm has mean d/3;
    # a standard normal has mean squared norm d. 20000 points: 3% tolerance.
    X = make_manifold("linear", n=20000, d=4, D=10, seed=2).double()
    assert abs((X * X).sum(1).mean().item() - 4 / 3) < 0.04
    G = make_manifold("gaussian", n=20000, d=4, D=10, seed=2).double()
    assert abs((G * G).sum(1).mean().item() - 4.0) < 0.12


def test_noise_has_the_requested_std():
    # Components orthogonal to the 2-d plane are pure noise: their std is `noise`
    # (60000 values, 2% tolerance).
    X = make_manifold("linear", n=1000, d=2, D=62, noise=0.05, seed=3).double()
    Xc = X - X.mean(0)
    Vh = torch.linalg.svd(Xc, full_matrices=False).Vh
    residual = Xc @ Vh[2:].T  # (1000, 60) off the plane
    assert abs(residual.std().item() - 0.05) < 0.001


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "cube"}, "choose one of"),
        ({"n": 0}, "at least 1"),
        ({"d": 0}, "at least 1"),
        ({"n": 2.5}, "integer"),
        ({"name": "swiss_roll", "d": 3}, "pass d=2"),
        ({"name": "sphere", "d": 3, "D": 3}, "pass D >= 4"),
        ({"name": "torus", "d": 3, "D": 5}, "pass D >= 6"),
        ({"noise": -0.1}, "noise"),
        ({"noise": math.nan}, "noise"),
    ],
)
def test_bad_arguments_say_what_to_change(kwargs, message):
    args = {"name": "linear", "n": 10, "d": 2, "D": 8} | kwargs
    with pytest.raises(InvalidInputError, match=message):
        make_manifold(**args)
