"""Scoped forward hooks that name every module call.

A module called several times in one forward pass (torchvision's ResNet calls one
``relu`` three times per block) gets one name per call: ``relu``, ``relu#2``,
``relu#3``. The counters restart whenever the root model is called, so the names
of a call are the same in every batch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

__all__ = ["call_name", "forward_hooks", "module_name"]

Callback = Callable[[str, nn.Module, Any], None]


def call_name(name: str, call: int) -> str:
    """The record name of the ``call``-th (1-based) call of module ``name``."""
    return name if call == 1 else f"{name}#{call}"


def module_name(record: str) -> str:
    """The module of a record name: ``"layer1.0.relu#2"`` -> ``"layer1.0.relu"``."""
    return record.split("#", 1)[0]


@contextmanager
def forward_hooks(
    model: nn.Module,
    callback: Callback,
    *,
    modules: Collection[str] | None = None,
) -> Iterator[None]:
    """Call ``callback(name, module, output)`` after every submodule call of ``model``.

    Hooks are registered on entry and all removed on exit, whether the block ends
    normally or with an exception (from the model or from ``callback``).

    Parameters
    ----------
    model:
        The root; it gets no forward hook of its own, only a pre-hook that resets the
        call counters at the start of each of its forward passes.
    callback:
        Called in completion order (a block after its children) with the call name
        (``relu``, ``relu#2``, ...), the module and its raw output (a tensor, tuple,
        dict or anything the module returns). Copy what you keep: in-place operations
        later in the forward pass (``ReLU(inplace=True)``, ``out += identity``) may
        modify the tensor.
    modules:
        Qualified module names (from ``named_modules()``, without ``#k``) to hook;
        ``None`` hooks every submodule. Unknown names are ignored.

    Example
    -------
    >>> names = []
    >>> with forward_hooks(model, lambda name, module, out: names.append(name)):
    ...     model(x)
    """
    calls: dict[str, int] = {}
    handles = []

    def reset(module: nn.Module, args: Any) -> None:
        calls.clear()

    def make_hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            callback(call_name(name, calls[name]), module, output)

        return hook

    try:
        handles.append(model.register_forward_pre_hook(reset))
        for name, module in model.named_modules():
            if name and (modules is None or name in modules):
                handles.append(module.register_forward_hook(make_hook(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()
