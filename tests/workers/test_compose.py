"""docker-compose.yml, checked without Docker: every command of our images exists in
the project, every variable it sets is a settings field, secrets are required."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.workers.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# Ours: built from the Dockerfile. The others are stock images configured by theirs.
OURS = sorted(name for name, svc in SERVICES.items() if "build" in svc)
_VAR = re.compile(r"\$\{(\w+)(:?[-?+])?([^}]*)\}")
_SECRET = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)


def test_the_expected_services_are_there() -> None:
    assert set(SERVICES) == {
        "postgres",
        "redis",
        "migrate",
        "api",
        "worker-gpu",
        "worker-cpu",
        "scheduler",
    }
    assert set(OURS) == {"migrate", "api", "worker-gpu", "worker-cpu", "scheduler"}


@pytest.mark.parametrize("name", OURS)
def test_command_exists_in_the_project(name: str) -> None:
    command = SERVICES[name]["command"]
    assert isinstance(command, list), "exec form: no shell between Docker and us"
    program, args = command[0], command[1:]
    if program == "bottlelens":
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "scripts"
        ]
        assert scripts["bottlelens"] == "workers.cli:main"
        from workers.cli import app

        out = CliRunner().invoke(app, [*args, "--help"])
        assert out.exit_code == 0, out.output
    elif program == "uvicorn":
        module, _, attr = args[0].partition(":")
        assert "--factory" in args
        factory = getattr(__import__(module, fromlist=[attr]), attr)
        assert callable(factory)
    elif program == "celery":
        assert args[0] == "-A"
        from celery import Celery

        from workers.celery_app import QUEUES

        celery_app = getattr(__import__(args[1], fromlist=["app"]), "app")
        assert isinstance(celery_app, Celery)
        assert args[2] in ("worker", "beat")
        if args[2] == "worker":
            queues = args[args.index("-Q") + 1].split(",")
            assert set(queues) <= set(QUEUES)
            assert "-c" in args
    else:
        pytest.fail(f"{name}: unknown program {program!r}")


def test_build_targets_exist_in_the_dockerfile() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, re.MULTILINE))
    for name in OURS:
        assert SERVICES[name]["build"]["target"] in targets


@pytest.mark.parametrize("name", OURS)
def test_environment_is_settings_fields(name: str) -> None:
    from service.settings import Settings

    prefix = Settings.model_config["env_prefix"]
    env = SERVICES[name]["environment"]
    assert isinstance(env, dict) and env
    unknown = [
        key
        for key in env
        if not key.startswith(prefix)
        or key.removeprefix(prefix).lower() not in Settings.model_fields
    ]
    assert unknown == []
    Settings(**{k.removeprefix(prefix).lower(): _render(v) for k, v in env.items()})


def test_secrets_are_required_variables_never_values() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for var, op, _ in _VAR.findall(text):
        if _SECRET.search(var):
            assert op == ":?", f"${{{var}}} must be written ${{{var}:?message}}"
    for name, svc in SERVICES.items():
        env = svc.get("environment") or {}
        for key, value in env.items():
            value = str(value)
            if _SECRET.search(key):
                assert _VAR.fullmatch(value), f"{name}.{key} is a literal"
            userinfo = re.search(r"://([^@/]*)@", value)
            if userinfo and ":" in userinfo[1]:
                password = userinfo[1].split(":", 1)[1]
                assert _VAR.fullmatch(password), f"{name}.{key}: literal password"


def test_health_checks_and_order() -> None:
    for name, svc in SERVICES.items():
        if name == "migrate":
            assert svc["restart"] == "no" and "healthcheck" not in svc
            continue
        assert svc["healthcheck"]["test"], name
    for name, svc in SERVICES.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES
            wanted = (
                "service_completed_successfully"
                if dep == "migrate"
                else "service_healthy"
            )
            assert cond["condition"] == wanted, (name, dep)
    assert "migrate" in SERVICES["api"]["depends_on"]
    assert SERVICES["migrate"]["command"] == ["bottlelens", "db", "upgrade"]


def test_gpu_worker_reserves_a_gpu_and_takes_only_the_gpu_queue() -> None:
    worker = SERVICES["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    command = worker["command"]
    assert command[command.index("-Q") + 1] == "gpu"
    assert command[command.index("-c") + 1] == "1"
    beat = [n for n, s in SERVICES.items() if "beat" in s.get("command", [])]
    assert beat == ["scheduler"]  # one beat, or every reconcile is sent twice


def _render(value: Any) -> str:
    """The value as Compose would give it, with ``${VAR:?}`` set to ``x``."""
    return _VAR.sub("x", str(value))
