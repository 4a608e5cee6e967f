"""The dataset-spec grammar: built-in datasets named by a string.

- ``sklearn:digits``, ``sklearn:breast_cancer``: scikit-learn's bundled sets;
- ``synthetic:<manifold>?d=5&D=64&n=2000&noise=0.01&seed=0``: points on a manifold
  of known intrinsic dimension ``d`` in ``R^D`` (every key optional; these are the
  defaults but ``noise=0``, and ``d=2`` for the ``swiss_roll``).

Files are uploaded (API) or named by path (CLI) with one of ``FILE_SUFFIXES``.
:func:`parse_spec` checks a spec completely, size included, without making data.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from contract.errors import ContractError

FILE_SUFFIXES = (".npz", ".safetensors", ".csv")
# name -> (samples, features) of scikit-learn's bundled sets.
SKLEARN_DATASETS: dict[str, tuple[int, int]] = {
    "digits": (1797, 64),
    "breast_cancer": (569, 30),
}
# manifold -> the ambient dimension it needs, as a rule of d.
MANIFOLDS: dict[str, str] = {
    "linear": "d",
    "gaussian": "d",
    "sphere": "d+1",
    "torus": "2d",
    "swiss_roll": "3",
}
SYNTHETIC_DEFAULTS: dict[str, int | float] = {
    "d": 5,
    "D": 64,
    "n": 2000,
    "noise": 0.0,
    "seed": 0,
}
SPEC_FORMS = (
    "sklearn:digits, sklearn:breast_cancer or "
    "synthetic:<manifold>?d=5&D=64&n=2000&noise=0.01&seed=0"
)
MAX_SPEC_LENGTH = 500
_PREFIX = re.compile(r"(sklearn|synthetic):([A-Za-z0-9_]+)(\?.*)?", re.DOTALL)


@dataclass(frozen=True)
class DatasetSpec:
    """A checked built-in spec; ``params`` of a synthetic one are complete."""

    kind: str  # "sklearn" | "synthetic"
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_bytes(self) -> int:
        """Bytes of ``x`` as float32."""
        if self.kind == "sklearn":
            n, features = SKLEARN_DATASETS[self.name]
            return 4 * n * features
        return 4 * int(self.params["n"]) * int(self.params["D"])


def ambient_dimension(manifold: str, d: int) -> int:
    """The smallest ``D`` that ``manifold`` with intrinsic dimension ``d`` fits in."""
    return {"d": d, "d+1": d + 1, "2d": 2 * d, "3": 3}[MANIFOLDS[manifold]]


def is_builtin(spec: str) -> bool:
    """True for a spec of the built-in forms (not a file path)."""
    return spec.startswith(("sklearn:", "synthetic:"))


def parse_spec(spec: str, *, max_bytes: int | None = None) -> DatasetSpec:
    """Check a built-in spec completely; ``max_bytes`` caps the data a synthetic
    spec makes.

    Raises ``ContractError`` listing every problem (code ``too_large`` when the
    only problem is the size).
    """
    if not isinstance(spec, str) or len(spec) > MAX_SPEC_LENGTH:
        raise ContractError(
            "invalid dataset spec",
            [f"a spec is a string of at most {MAX_SPEC_LENGTH} characters"],
        )
    match = _PREFIX.fullmatch(spec)
    if match is None:
        raise ContractError(
            f"unknown dataset spec form {spec[:100]!r}",
            [f"use {SPEC_FORMS}, or a file ({', '.join(FILE_SUFFIXES)})"],
        )
    kind, name, query = match[1], match[2], (match[3] or "")[1:]
    if kind == "sklearn":
        if name not in SKLEARN_DATASETS or query:
            raise ContractError(
                f"unknown built-in dataset {spec[:100]!r}",
                [f"available: {', '.join('sklearn:' + s for s in SKLEARN_DATASETS)}"],
            )
        spec_ = DatasetSpec(kind, name)
    else:
        spec_ = DatasetSpec(kind, name, _synthetic_params(spec, name, query))
    # The bundled sets are small and fixed; a synthetic spec is as large as asked.
    if kind == "synthetic" and max_bytes is not None and spec_.n_bytes > max_bytes:
        raise ContractError(
            f"{spec[:100]!r} would take {spec_.n_bytes} bytes",
            [f"more than the limit of {max_bytes}; lower n or D"],
            code="too_large",
        )
    return spec_


def _synthetic_params(spec: str, manifold: str, query: str) -> dict[str, Any]:
    problems: list[str] = []
    if manifold not in MANIFOLDS:
        raise ContractError(
            f"unknown manifold {manifold[:40]!r} in {spec[:100]!r} "
            f"(forms: {SPEC_FORMS})",
            [f"available: {', '.join(MANIFOLDS)}"],
        )
    params: dict[str, Any] = dict(SYNTHETIC_DEFAULTS)
    if manifold == "swiss_roll":
        params["d"] = 2  # the only dimension it has
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ContractError(
            f"bad query in {spec[:100]!r} (forms: {SPEC_FORMS})", [str(exc)]
        ) from exc
    seen: set[str] = set()
    for key, text in pairs:
        if key not in SYNTHETIC_DEFAULTS:
            problems.append(
                f"unknown key {key[:40]!r}; accepted keys: "
                f"{', '.join(SYNTHETIC_DEFAULTS)}"
            )
        elif key in seen:
            problems.append(f"key {key!r} given twice")
        else:
            seen.add(key)
            value = _value(key, text, problems)
            if value is not None:
                params[key] = value
    d, D = params["d"], params["D"]
    if manifold == "swiss_roll" and d != 2:
        problems.append(f"the swiss_roll is 2-dimensional: pass d=2, got d={d}")
    elif isinstance(d, int) and d >= 1 and ambient_dimension(manifold, d) > D:
        need = ambient_dimension(manifold, d)
        problems.append(f"{manifold} with d={d} lives in R^{need}: pass D >= {need}")
    if problems:
        raise ContractError(
            f"invalid dataset spec {spec[:100]!r} (forms: {SPEC_FORMS})", problems
        )
    return params


def _value(key: str, text: str, problems: list[str]) -> int | float | None:
    try:
        value: int | float = float(text) if key == "noise" else int(text)
    except ValueError:
        kind = "a number" if key == "noise" else "an integer"
        problems.append(f"{key} must be {kind}, got {text[:40]!r}")
        return None
    if key == "noise" and not (math.isfinite(value) and value >= 0):
        problems.append("noise must be finite and >= 0")
        return None
    minimum = {"d": 1, "D": 1, "n": 2}.get(key)
    if minimum is not None and value < minimum:
        problems.append(f"{key} must be at least {minimum}, got {value}")
        return None
    return value
