"""Dependencies point one way: service <- workers -> analysis (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    # analysis is a pure library over tensors: usable from a notebook with torch.
    "analysis": {"service", "workers", "sqlalchemy", "celery", "fastapi", "alembic"},
    # service never imports torch: it enqueues tasks by name.
    "service": {"analysis", "workers", "torch", "captum", "numpy", "sklearn"},
    "workers": set(),
    # the client talks HTTP: the service's pydantic schemas, nothing that serves.
    "bottlelens": {"analysis", "workers", "torch", "numpy", "sqlalchemy", "fastapi"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    bad = {
        str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN[package])
        for f in files
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_no_unsafe_loading_outside_tests() -> None:
    """Every torch.load passes weights_only=True; no pickle or dynamic import."""
    offenders = []
    for package in FORBIDDEN:
        for f in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call):
                    continue
                name = ast.unparse(node.func)
                if name in {
                    "pickle.load",
                    "pickle.loads",
                    "torch.jit.load",
                    "importlib.import_module",
                    "__import__",
                    "eval",
                    "exec",
                }:
                    offenders.append(f"{f.relative_to(ROOT)}:{node.lineno} {name}")
                if name == "torch.load":
                    kw = {k.arg: k.value for k in node.keywords}
                    wo = kw.get("weights_only")
                    if not (isinstance(wo, ast.Constant) and wo.value is True):
                        offenders.append(f"{f.relative_to(ROOT)}:{node.lineno} {name}")
    assert offenders == []


def test_the_service_and_its_workers_never_allow_code_checkpoints() -> None:
    """``torch.export.load`` (which can unpickle) is reached only through
    ``allow_code_checkpoints=True``; nothing an upload reaches passes it: the
    service refuses export programs at upload, and the worker never allows them."""
    offenders = []
    for package in ("service", "workers"):
        for f in (ROOT / package).rglob("*.py"):
            if f.name == "cli.py":  # the local CLI's explicit, documented flag
                continue
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.keyword)
                    and node.arg == "allow_code_checkpoints"
                ):
                    offenders.append(f"{f.relative_to(ROOT)}:{node.value.lineno}")
    assert offenders == []
