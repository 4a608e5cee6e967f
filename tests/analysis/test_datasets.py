"""Dataset specs: files, scikit-learn built-ins, synthetic manifolds, rejections."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from analysis.datasets import load_dataset
from analysis.errors import FileTooLargeError, InvalidInputError, UnsafeFileError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 3)).astype(np.float64)
Y = np.array([0, 1, 2, 0, 1, 2])


def test_npz_round_trip(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=X, y=Y)
    ds = load_dataset(str(path))
    assert ds.x.dtype == torch.float32 and ds.x.shape == (6, 3)
    torch.testing.assert_close(ds.x, torch.from_numpy(X).float())
    assert ds.y is not None and ds.y.dtype == torch.int64
    assert ds.y.tolist() == Y.tolist()
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ds.name == "d.npz" and ds.spec == str(path)


def test_npz_without_labels_and_float_targets(tmp_path):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=X.reshape(6, 1, 3))
    ds = load_dataset(str(path))
    assert ds.y is None and ds.x.shape == (6, 1, 3)
    np.savez(path, x=X, y=X[:, 0])
    y = load_dataset(str(path)).y
    assert y is not None and y.dtype == torch.float32


def test_safetensors_round_trip(tmp_path):
    path = tmp_path / "d.safetensors"
    save_file({"x": torch.from_numpy(X), "y": torch.from_numpy(Y)}, str(path))
    ds = load_dataset(str(path))
    torch.testing.assert_close(ds.x, torch.from_numpy(X).float())
    assert ds.y is not None and ds.y.tolist() == Y.tolist()


def _csv(tmp_path, text: str) -> str:
    path = tmp_path / "d.csv"
    path.write_text(text)
    return str(path)


def test_csv_round_trip(tmp_path):
    path = _csv(tmp_path, "a,label,b\n1,0,2.5\n3,1,-4e-1\n\n5,1,6\n")
    ds = load_dataset(path)
    assert ds.x.tolist() == [[1.0, 2.5], [3.0, -0.4000000059604645], [5.0, 6.0]]
    assert ds.y is not None and ds.y.dtype == torch.int64
    assert ds.y.tolist() == [0, 1, 1]
    target = load_dataset(_csv(tmp_path, "a,y\n1,0.5\n2,1.5\n"), label_column="y").y
    assert target is not None and target.dtype == torch.float32
    unlabelled = load_dataset(_csv(tmp_path, "a,b\n1,2\n3,4\n"), label_column=None)
    assert unlabelled.y is None and unlabelled.x.shape == (2, 2)


def test_digits():
    ds = load_dataset("sklearn:digits")
    assert ds.x.shape == (1797, 64) and ds.x.dtype == torch.float32
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    assert ds.y is not None and set(ds.y.tolist()) == set(range(10))
    assert ds.name == "digits" and ds.sha256 == load_dataset("sklearn:digits").sha256


def test_breast_cancer_is_standardised():
    ds = load_dataset("sklearn:breast_cancer")
    assert ds.x.shape == (569, 30)
    torch.testing.assert_close(ds.x.mean(0), torch.zeros(30), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        ds.x.std(0, correction=0), torch.ones(30), atol=1e-4, rtol=0
    )
    assert ds.y is not None and set(ds.y.tolist()) == {0, 1}


def test_synthetic_records_the_truth():
    from analysis.manifolds import make_manifold

    ds = load_dataset("synthetic:sphere?d=2&D=16&n=300&noise=0.01&seed=3")
    expected = make_manifold("sphere", 300, 2, 16, noise=0.01, seed=3)
    torch.testing.assert_close(ds.x, expected)
    assert ds.y is None and ds.name == "sphere"
    assert ds.meta == {
        "manifold": "sphere",
        "d": 2,
        "D": 16,
        "n": 300,
        "noise": 0.01,
        "seed": 3,
        "intrinsic_dimension": 2,
    }
    assert load_dataset("synthetic:swiss_roll?n=50").meta["intrinsic_dimension"] == 2
    other = load_dataset("synthetic:sphere?d=2&D=16&n=300&noise=0.01&seed=4")
    assert other.sha256 != ds.sha256


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("synthetic:sphere?dim=3", "unknown key 'dim'.*accepted keys: d, D, n"),
        ("synthetic:sphere?d=two", "d must be an integer"),
        ("synthetic:sphere?d=2&d=3", "given twice"),
        ("synthetic:sphere?noise=-1", "noise must be finite"),
        ("synthetic:sphere?n=1", "at least 2"),
        ("synthetic:cube", "unknown manifold 'cube'"),
        ("synthetic:sphere?d=5&D=3", "D >= 6"),
        ("sklearn:iris", "available: sklearn:digits"),
        ("data.parquet", "unknown dataset"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(InvalidInputError, match=match):
        load_dataset(spec)


def test_synthetic_size_cap():
    with pytest.raises(FileTooLargeError, match="lower n or D"):
        load_dataset("synthetic:linear?n=1000&D=1000", max_bytes=10**6)


def test_npz_with_pickled_objects_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array([{"a": 1}, {"b": 2}], dtype=object))
    with pytest.raises(UnsafeFileError, match="pickled"):
        load_dataset(str(path))


def test_npz_unknown_arrays_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=X, labels=Y)
    with pytest.raises(InvalidInputError, match="found 'labels', 'x'"):
        load_dataset(str(path))


def test_nan_reported_with_count_and_place(tmp_path):
    x = X.copy()
    x[1, 0], x[4, 2], x[4, 1] = np.nan, np.inf, np.nan
    path = tmp_path / "d.npz"
    np.savez(path, x=x)
    with pytest.raises(InvalidInputError, match=r"3 non-finite .*2 NaN, 1 Inf.*1, 4"):
        load_dataset(str(path))


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (X[:1], None, "at least 2"),
        (X[:, 0], None, "reshape to"),
        (X, Y[:5], r"y must have shape \(6,\)"),
        (X.astype(np.complex64), None, "numeric|real"),
        (np.full((2, 2), 1e300), None, "non-finite"),  # Inf once in float32
    ],
)
def test_array_checks(tmp_path, x, y, match):
    path = tmp_path / "d.npz"
    np.savez(path, x=x, **({} if y is None else {"y": y}))
    with pytest.raises(InvalidInputError, match=match):
        load_dataset(str(path))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a,label\n1,0\n2\n", "row 3 has 1 cells, the header has 2"),
        ("a,b\n1,2\n3,4\n", r"no label column 'label'; columns: a, b"),
        ("a,label\n1,0\nx,1\n", r"row 3, column 'a': 'x' is not a number"),
        ("1,2\n3,4\n", "header row"),
        ("a,label\n1,0\n", "at least 2"),
    ],
)
def test_csv_rejections(tmp_path, text, match):
    with pytest.raises(InvalidInputError, match=match):
        load_dataset(_csv(tmp_path, text))


def test_files_must_be_regular_and_small(tmp_path):
    os.mkdir(tmp_path / "dir.npz")
    with pytest.raises(InvalidInputError, match="not a regular file"):
        load_dataset(str(tmp_path / "dir.npz"))
    path = tmp_path / "d.npz"
    np.savez(path, x=X)
    with pytest.raises(FileTooLargeError):
        load_dataset(str(path), max_bytes=100)


def test_csv_streamed_with_bom_crlf_and_quoted_names(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b'\xef\xbb\xbf"w, h",label\r\n1.5,2\r\n\r\n-3,0\r\n')
    ds = load_dataset(str(path))
    assert ds.x.tolist() == [[1.5], [-3.0]]
    assert ds.y is not None and ds.y.dtype == torch.int64 and ds.y.tolist() == [2, 0]


def test_nonfinite_report_spans_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr("analysis.datasets._FINITE_BLOCK", 6)  # 2 rows per block
    x = np.ones((9, 3))
    x[0, 0], x[5, 1], x[8, 2], x[8, 0] = np.nan, np.inf, -np.inf, np.nan
    path = tmp_path / "d.npz"
    np.savez(path, x=x)
    with pytest.raises(
        InvalidInputError,
        match=r"4 non-finite .*2 NaN, 2 Inf\) in 3 samples \(indices 0, 5, 8\)",
    ):
        load_dataset(str(path))
