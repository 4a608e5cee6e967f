"""One thread policy for every entry point: the CLI, the worker and library callers.

Two thread pools that each take every core fight over them: numpy's BLAS and torch's
OpenMP on a busy 2-core machine turned a 2 s analysis into 9-39 s (FACTS.md). So the
math runs in one pool, torch's, sized to the cores this process may use divided
among the processes that run analyses side by side; every BLAS library runs one
thread inside each torch thread, and torch's inter-op pool has one thread.
"""

from __future__ import annotations

import logging
import os

import torch

__all__ = ["default_threads", "ensure_threads", "set_threads"]

log = logging.getLogger(__name__)

# Read by OpenBLAS/MKL/OpenMP libraries loaded after the call, and by child processes.
_BLAS_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
_applied: int | None = None


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    return max(1, len(os.sched_getaffinity(0)))


def default_threads(processes: int = 1) -> int:
    """The cores this process may use divided among ``processes`` concurrent
    analysis processes, at least one."""
    return max(1, available_cores() // max(1, processes))


def set_threads(n: int | None = None, *, processes: int = 1) -> int:
    """Size the thread pools of this process for analysis; the torch thread count.

    Call it once, before the work starts (a second call with the same count does
    nothing). Torch gets ``n`` intra-op threads and one inter-op thread; each BLAS
    library (numpy's OpenBLAS, MKL) gets one thread, so the process never runs more
    threads than ``n``; OpenMP libraries other than torch's get ``n``. Libraries
    loaded later read the same limits from the environment (``OMP_NUM_THREADS``,
    ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``), as child processes do.

    Parameters
    ----------
    n:
        Torch threads. ``None``: ``OMP_NUM_THREADS`` when the environment sets it,
        else :func:`default_threads` of ``processes``.
    processes:
        How many processes run analyses at the same time on these cores (the
        worker pool's concurrency); ignored when ``n`` is given.

    Returns
    -------
    The number of torch threads now in force.

    Raises
    ------
    ValueError
        ``n`` or ``processes`` is below 1.

    Example
    -------
    >>> set_threads(1)
    1
    """
    global _applied
    if n is not None and n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if n is None:
        n = _threads_from_env() or default_threads(processes)
    if _applied == n:
        return n
    os.environ["OMP_NUM_THREADS"] = str(n)
    for var in _BLAS_VARS:
        os.environ[var] = "1"
    torch.set_num_threads(n)
    _set_interop_threads(1)
    _limit_loaded_libraries(n)
    _applied = n
    return n


def ensure_threads() -> int:
    """The policy of :func:`set_threads` with its defaults, unless an entry point
    (the CLI, a worker, the caller) already set one; the torch thread count."""
    return _applied if _applied is not None else set_threads()


def _threads_from_env() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "")
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 1 else None


def _set_interop_threads(n: int) -> None:
    if torch.get_num_interop_threads() == n:
        return
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        # Allowed once, before any inter-op work; later calls keep the first size.
        log.debug("torch inter-op threads already set to %d", n)


def _limit_loaded_libraries(n: int) -> None:
    """BLAS at one thread and OpenMP at ``n`` in the libraries loaded so far."""
    try:
        import numpy  # noqa: F401 - load its BLAS so that the limit reaches it
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits={"blas": 1, "openmp": n})
