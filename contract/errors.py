"""Error codes shared by the API, the workers and the CLI, and the contract's error.

A code is the stable, machine-readable name of a failure a user can act on; the
message says what to change. The service maps codes to HTTP statuses, the workers
store them on a failed upload or analysis, the CLI prints the message.
"""

from __future__ import annotations

from collections.abc import Iterable

# code -> what it means; every failure stored or answered uses one of these.
ERROR_CODES: dict[str, str] = {
    "invalid_input": "a parameter, config, file or spec that cannot be used as it is",
    "unsafe_file": "a file that would need code execution to load",
    "too_large": "over a size cap (upload, archive, declared array, spec)",
    "checkpoint_mismatch": "weights that do not fit the architecture",
    "shape_mismatch": "data that does not fit the model's input",
    "unknown_architecture": "an architecture name the registry does not hold",
    "data_error": "data that cannot give an estimate (too few samples, non-finite)",
    "analysis_error": "the analysis library refused the work",
    "time_limit": "the work ran past the task time limit",
    "out_of_memory": "the work ran out of memory",
    "worker_lost": "the worker died on the last attempt",
    "cancelled": "cancelled by the user",
    "internal_error": "an unexpected error; the server log has the details",
}


class ContractError(ValueError):
    """Input that breaks the contract; ``problems`` lists every problem found.

    ``str(error)`` is ``message: problem; problem ...`` so a caller that shows one
    line shows them all.
    """

    def __init__(
        self, message: str, problems: Iterable[str] = (), *, code: str = "invalid_input"
    ) -> None:
        self.message = message
        self.problems = list(problems)
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        text = f"{message}: {'; '.join(self.problems)}" if self.problems else message
        super().__init__(text)
