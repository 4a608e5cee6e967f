"""The contract: torch-free, one answer for the API, the worker and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from contract.architectures import BUILTIN_CONFIGS, check_architecture, config_keys
from contract.config import parse_config
from contract.errors import ERROR_CODES, ContractError
from contract.estimators import ESTIMATORS, resolve_params
from contract.families import FAMILIES
from contract.specs import parse_spec

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "numpy", "sqlalchemy", "celery", "fastapi", "analysis", "service")


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {m.split(".")[0] for m in out.split()}


def test_importing_the_contract_imports_no_heavy_library() -> None:
    stmt = "; ".join(
        f"import contract.{m}"
        for m in (
            "architectures",
            "archives",
            "config",
            "errors",
            "estimators",
            "families",
            "formats",
            "result",
            "specs",
            "tasks",
        )
    )
    assert _modules_after(stmt) & set(HEAVY) == set()


def test_the_service_app_imports_neither_analysis_nor_torch() -> None:
    loaded = _modules_after("import service.main")
    assert loaded & {"analysis", "workers", "torch", "numpy"} == set()


def test_the_analysis_families_are_exactly_the_declared_ones() -> None:
    from analysis.families import REGISTRY

    assert set(REGISTRY) == set(FAMILIES)
    for name, family in REGISTRY.items():
        assert family.spec is FAMILIES[name]


def test_every_estimator_default_validates() -> None:
    for family, specs in ESTIMATORS.items():
        for name, spec in specs.items():
            params = resolve_params(family, name, {})
            assert params == spec.params().model_dump()
            assert 2 <= spec.min_samples <= spec.low_samples


def test_config_defaults_round_trip_through_json() -> None:
    cfg = parse_config({})
    assert parse_config(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for family in FAMILIES:
        assert cfg.to_dict()[family] == cfg.section(family).model_dump(mode="json")


@pytest.mark.parametrize("name", sorted(BUILTIN_CONFIGS))
def test_builtin_defaults_are_valid_and_listed(name: str) -> None:
    check_architecture(name, {})
    assert config_keys(name)


def test_spec_problems_are_listed_together() -> None:
    with pytest.raises(ContractError) as info:
        parse_spec("synthetic:torus?d=40&D=64&x=1&n=1")
    assert len(info.value.problems) == 3, info.value.problems


def test_a_too_large_synthetic_spec_says_so() -> None:
    with pytest.raises(ContractError) as info:
        parse_spec("synthetic:linear?n=1000000&D=4096", max_bytes=2**30)
    assert info.value.code == "too_large" and "lower n or D" in str(info.value)


def test_error_codes_of_the_workers_are_the_contract_codes() -> None:
    from workers.tasks import ERROR_CODES as WORKER_CODES

    assert {code for _, code in WORKER_CODES} <= set(ERROR_CODES)
