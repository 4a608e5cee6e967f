"""Value types of the contract's models.

JSON does not tell ``3`` from ``3.0``: an integral float is the same integer (JSON
Schema says so too), so an integer field takes it; a bool, a string or a float with
a fraction is still refused.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator


def integral(value: Any) -> Any:
    """``3.0`` -> ``3``; everything else unchanged (and checked strictly later)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(integral)]
