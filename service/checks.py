"""What the API checks with the contract before anything is stored or queued.

Everything a worker would refuse and that needs no torch is refused here at once,
with the contract's words (the CLI and the worker use the same functions): a 422
whose ``problems`` list every problem found.
"""

from __future__ import annotations

from typing import Any

from contract.architectures import check_architecture
from contract.config import AnalysisConfig, parse_config
from contract.errors import ContractError
from contract.specs import parse_spec
from service.errors import InvalidInput

_ARCHITECTURE_MAX = 100


def refused(exc: ContractError) -> InvalidInput:
    """The API's 422 for a contract error: its code, message and problems."""
    return InvalidInput(str(exc), code=exc.code, problems=exc.problems or [str(exc)])


def analysis_config(config: dict[str, Any]) -> AnalysisConfig:
    """The submitted config checked and completed with every default."""
    try:
        return parse_config(config)
    except ContractError as exc:
        raise refused(exc) from exc


def architecture(name: str | None, config: dict[str, Any]) -> str:
    """A registered architecture name whose config the built-in accepts."""
    if not name or len(name) > _ARCHITECTURE_MAX:
        raise InvalidInput(
            "the form field architecture must be a registry name such as mlp or "
            f"resnet (at most {_ARCHITECTURE_MAX} characters)"
        )
    try:
        check_architecture(name, config)
    except ContractError as exc:
        raise refused(exc) from exc
    return name


def dataset_spec(spec: str, *, max_bytes: int) -> str:
    """A built-in spec whose data fits ``max_bytes``; a path is refused (it would
    make the worker read its own files)."""
    try:
        parse_spec(spec, max_bytes=max_bytes)
    except ContractError as exc:
        raise refused(exc) from exc
    return spec
