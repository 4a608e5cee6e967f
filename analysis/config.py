"""The analysis config: the contract's, with the library's error type.

Defaults and checks live in ``contract.config`` (one source for the API, the workers
and the CLI); this module turns a contract error into the library's
``InvalidInputError`` so callers of ``analysis`` catch one error type.
"""

from __future__ import annotations

from typing import Any

from analysis.errors import from_contract
from contract.config import CONFIG_VERSION, AnalysisConfig
from contract.config import parse_config as _parse_config
from contract.errors import ContractError

__all__ = ["CONFIG_VERSION", "AnalysisConfig", "parse_config"]


def parse_config(data: AnalysisConfig | dict[str, Any] | None) -> AnalysisConfig:
    """Check ``data`` and build the frozen config (``contract.config.parse_config``).

    Raises ``InvalidInputError`` whose ``problems`` list every problem.
    """
    try:
        return _parse_config(data)
    except ContractError as exc:
        raise from_contract(exc) from exc
