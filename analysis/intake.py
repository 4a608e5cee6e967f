"""The dry run: does this model run on this data? Told before any analysis starts."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from analysis.errors import InvalidInputError, ShapeMismatchError

__all__ = ["dry_run"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _first_layer(model: nn.Module) -> tuple[str, str, int | None] | None:
    """``(name, description, values per sample it takes or None)`` of the first
    Linear or Conv in module order, where the model says what it expects."""
    for name, m in model.named_modules():
        where = repr(name) if name else "the model"
        if isinstance(m, nn.Linear):
            return where, f"Linear(in_features={m.in_features})", m.in_features
        if isinstance(m, _CONV):
            kind = type(m).__name__
            return where, f"{kind}(in_channels={m.in_channels})", None
    return None


def _param_dtype(model: nn.Module) -> torch.dtype | None:
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t.dtype
    return None


def _shapes(args: tuple[Any, ...]) -> str:
    return ", ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))


def dry_run(model: nn.Module, x: torch.Tensor) -> Any:
    """Run ``model`` on the first two samples of ``x``, or say why it cannot.

    The model runs in eval mode under ``torch.no_grad()``; each module's training
    flag is restored afterwards (a submodule frozen in eval mode stays so) and no
    hook is left behind. Data of another floating dtype than the model's
    parameters (float64 data, float32 model) is not cast: it is refused with the
    conversion to make, so what the dry run checks is what the analysis will run.

    Parameters
    ----------
    model:
        Any ``nn.Module`` (also an unflattened ``torch.export`` program).
    x:
        Inputs ``(N, ...)`` with ``N >= 1``, on the model's device.

    Returns
    -------
    The model's output on ``x[:2]`` (usually a tensor ``(2, ...)``).

    Raises
    ------
    ShapeMismatchError
        The model fails on the data, or the dtypes differ. The message names the
        data's sample shape and dtype, the module that failed and the input it got,
        the model's first Linear/Conv and parameter dtype, the original error, and
        what to change.

    Example
    -------
    >>> dry_run(build_model("mlp"), torch.zeros(10, 64)).shape
    torch.Size([2, 10])
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or len(x) == 0:
        raise InvalidInputError("data must be a tensor (N, ...) with N >= 1 samples")
    batch = x[:2]  # (2, ...)
    sample = f"samples of shape {tuple(x.shape[1:])} and dtype {x.dtype}"
    dtype = _param_dtype(model)
    if batch.is_floating_point() and dtype is not None and batch.dtype != dtype:
        raise ShapeMismatchError(
            f"the data has {sample}, but the model's parameters are {dtype}: convert "
            f"the data (x.to({dtype})) or the model (model.to({batch.dtype}))"
        )
    running: list[tuple[str, nn.Module, str]] = []  # modules entered, not yet left
    handles = []
    for name, m in model.named_modules():

        def enter(mod: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            running.append((name, mod, _shapes(args)))

        def leave(mod: nn.Module, args: Any, out: Any) -> None:
            running.pop()

        handles.append(m.register_forward_pre_hook(enter))
        handles.append(m.register_forward_hook(leave))
    # Each module's own flag: model.train(True) would also switch on a submodule
    # that was frozen in eval mode (a BatchNorm kept on its running statistics).
    was_training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            return model(batch)
    except Exception as e:
        raise ShapeMismatchError(_explain(model, x, sample, running, e)) from e
    finally:
        for h in handles:
            h.remove()
        for m, training in was_training.items():
            m.training = training


def _explain(
    model: nn.Module,
    x: torch.Tensor,
    sample: str,
    running: list[tuple[str, nn.Module, str]],
    error: Exception,
) -> str:
    parts = [f"the model cannot run on the data: {sample}"]
    if running:
        name, mod, shapes = running[-1]
        where = repr(name) if name else "the model itself"
        parts.append(
            f"it failed in {where} ({type(mod).__name__}), which got input {shapes}"
        )
    first = _first_layer(model)
    dtype = _param_dtype(model)
    if first is not None:
        where, desc, features = first
        line = f"its first layer {where} is {desc}"
        if dtype is not None:
            line += f", parameters {dtype}"
        parts.append(line)
        per_sample = x[0].numel()
        if features is not None and per_sample != features:
            parts.append(
                f"each sample has {per_sample} values but {where} takes {features}"
            )
    text = str(error).strip()
    parts.append(f"error: {text.splitlines()[0] if text else type(error).__name__}")
    parts.append(
        "change the data to the shape the model takes, or the architecture config "
        "(input size, channels) to fit the data"
    )
    return "; ".join(parts)
