"""Domain errors of the analysis library.

Every message says what the user should change. The service maps these classes to
HTTP codes in one table (``service/main.py``); the CLI prints the message.
"""

from __future__ import annotations

from collections.abc import Iterable

from contract.errors import ContractError


class BottlelensError(Exception):
    """Base class of every error bottlelens raises on purpose."""


class InvalidInputError(BottlelensError, ValueError):
    """The user's input (file, spec, config) cannot be used as it is.

    ``problems`` lists each problem when several were found at once.
    """

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class DataError(InvalidInputError):
    """The data cannot give this estimate: too few samples, non-finite values.

    The analysis pipeline records it as a metric row with a reason instead of
    stopping, since one degenerate layer should not sink the other layers.
    """


class UnsafeFileError(InvalidInputError):
    """A file would need code execution (pickle, TorchScript, export) to load."""


class CheckpointMismatchError(InvalidInputError):
    """Weights do not fit the architecture: missing, unexpected, shape or dtype."""


class ShapeMismatchError(InvalidInputError):
    """The data does not fit the model's input (found by the dry run)."""


class UnknownArchitectureError(InvalidInputError):
    """An architecture name that the registry does not hold."""


class FileTooLargeError(InvalidInputError):
    """A file is larger than the configured cap."""


def from_contract(exc: ContractError) -> InvalidInputError:
    """The library's error for a contract error, by its code."""
    cls: type[InvalidInputError] = {
        "too_large": FileTooLargeError,
        "unknown_architecture": UnknownArchitectureError,
        "unsafe_file": UnsafeFileError,
    }.get(exc.code, InvalidInputError)
    return cls(str(exc), exc.problems)
