"""Labels that index the model's outputs: checked before any work starts."""

from __future__ import annotations

import torch

from analysis.errors import InvalidInputError

__all__ = ["check_labels"]

_SHOWN = 10


def check_labels(y: torch.Tensor | None, n_outputs: int) -> None:
    """Refuse integer labels that cannot be class indices of the model's outputs.

    Call it when a label picks an output of the model (an attribution target
    ``"label"``, a class-conditional score): a label ``k`` reads output ``k``, so it
    must lie in ``[0, n_outputs)``. ``None`` and floating labels (regression
    targets) pass: they index nothing.

    Parameters
    ----------
    y:
        Labels ``(N,)``, or ``None``.
    n_outputs:
        Number of outputs of the model per sample (the logits' last dimension).

    Raises
    ------
    InvalidInputError
        A negative label, or one at or over ``n_outputs``; the message gives the
        offending values with their counts and the range expected.

    Example
    -------
    >>> check_labels(torch.tensor([0, 2, 1]), n_outputs=3)
    >>> check_labels(torch.tensor([0, 3]), n_outputs=3)
    Traceback (most recent call last):
    ...
    analysis.errors.InvalidInputError: labels must be class indices 0..2 ...
    """
    if n_outputs < 1:
        raise InvalidInputError(f"n_outputs must be at least 1, got {n_outputs}")
    if y is None or y.is_floating_point() or y.is_complex() or y.numel() == 0:
        return
    bad = (y < 0) | (y >= n_outputs)
    if not bool(bad.any()):
        return
    values, counts = torch.unique(y[bad], return_counts=True)
    shown = ", ".join(
        f"{v} ({c} samples)"
        for v, c in zip(values[:_SHOWN].tolist(), counts[:_SHOWN].tolist(), strict=True)
    )
    more = f" and {len(values) - _SHOWN} more values" if len(values) > _SHOWN else ""
    raise InvalidInputError(
        f"labels must be class indices 0..{n_outputs - 1} for a model with "
        f"{n_outputs} outputs; found {shown}{more}; remap the labels to "
        f"0..{n_outputs - 1}, or use a model with as many outputs as classes"
    )
