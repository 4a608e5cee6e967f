"""What every attribution call shares: the model's state, the layer, the target.

Private to :mod:`analysis.attribution`. Three things are settled here once:

- :func:`attribution_scope` puts the model in eval mode, turns off ``requires_grad``
  on its parameters (captum differentiates with respect to inputs and layer outputs
  only; parameter gradients would cost memory for nothing) and sets ``inplace=False``
  on every module that has such a flag (``ReLU(inplace=True)`` ...). All of it is
  restored on exit, also when the model raises.
- :func:`resolve_layer` turns a ``named_modules()`` name into the module, refusing a
  ``#k`` call name and a module called more than once per forward pass: captum
  hooks a module, so it would attribute the last call and call it the layer.
- :func:`resolve_target` turns the user's target rule into what captum takes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from analysis.errors import InvalidInputError
from analysis.hooks import forward_hooks

Target = int | torch.Tensor | str | None
TARGET_RULES = ("reconstruction", "auto")


def model_device(model: nn.Module) -> torch.device:
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextmanager
def attribution_scope(model: nn.Module) -> Iterator[None]:
    """Eval mode, no parameter gradients, no in-place modules; all restored."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    inplace = [
        m for m in model.modules() if getattr(m, "inplace", None) is True
    ]  # ReLU, ReLU6, LeakyReLU, ELU, Hardtanh, Dropout, ...
    try:
        model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        for m in inplace:
            m.inplace = False  # type: ignore[assignment]
        yield
    finally:
        for m in inplace:
            m.inplace = True  # type: ignore[assignment]
        for p, flag in grads:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training


@dataclass(frozen=True)
class LayerRef:
    name: str
    module: nn.Module
    shape: tuple[int, ...]  # per-sample output shape

    @property
    def is_conv(self) -> bool:
        """Channels first with 1 to 3 spatial dimensions: (C, L), (C, H, W) ..."""
        return 2 <= len(self.shape) <= 4


def resolve_layer(model: nn.Module, layer: str, x: torch.Tensor) -> LayerRef:
    """The module named ``layer``, checked to be called exactly once per forward."""
    if not isinstance(layer, str) or not layer:
        raise InvalidInputError(
            f"layer must be a non-empty module name from named_modules(), got {layer!r}"
        )
    if "#" in layer:
        raise InvalidInputError(
            f"layer {layer!r} names a repeated call of a module; captum attributes a "
            "module, not one of its calls. Attribute a layer that is called once per "
            "forward pass (e.g. the weight layer before it)."
        )
    modules = dict(model.named_modules())
    if layer not in modules:
        names = ", ".join(n for n in itertools.islice(modules, 1, 13))
        raise InvalidInputError(
            f"model has no module {layer!r}; names come from named_modules(), "
            f"e.g. {names}"
        )
    outputs: list[Any] = []
    with (
        torch.no_grad(),
        forward_hooks(
            model, lambda name, module, out: outputs.append(out), modules={layer}
        ),
    ):
        model(x[:1])
    if not outputs:
        raise InvalidInputError(f"module {layer!r} is not called in a forward pass")
    if len(outputs) > 1:
        raise InvalidInputError(
            f"module {layer!r} is called {len(outputs)} times per forward pass; "
            "captum attributes a module, not a call, so its attributions would mix "
            "the calls. Attribute a layer that is called once."
        )
    out = outputs[0]
    if not isinstance(out, torch.Tensor) or out.ndim < 2 or len(out) != 1:
        raise InvalidInputError(
            f"module {layer!r} returns {type(out).__name__}, not a batch tensor "
            "(B, ...); attribution needs a layer with one tensor output"
        )
    return LayerRef(layer, modules[layer], tuple(int(s) for s in out.shape[1:]))


class _CloneOutput(nn.Module):
    """Runs ``inner`` and hands a copy of its output to the rest of the forward pass.

    LayerIntegratedGradients replaces the layer's output with a leaf tensor; an
    in-place operation after the layer (``out += identity`` in a ResNet block)
    would then fail ("a leaf Variable that requires grad is being used in an
    in-place operation"). The copy takes that write instead.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.inner(*args, **kwargs)
        return out.clone() if isinstance(out, torch.Tensor) else out


@contextmanager
def cloned_output(model: nn.Module, layer: str) -> Iterator[None]:
    """Swap module ``layer`` for a :class:`_CloneOutput` around it; put it back."""
    parent_name, _, child = layer.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    original = parent._modules[child]
    assert original is not None
    parent._modules[child] = _CloneOutput(original)
    try:
        yield
    finally:
        parent._modules[child] = original


class ReconstructionLoss(nn.Module):
    """``x -> ||f(x) - x||^2`` summed per sample: (N, ...) -> (N,)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return (out - x).pow(2).reshape(len(x), -1).sum(1)  # (N,)


@dataclass(frozen=True)
class Resolved:
    """What captum gets: the function to attribute and its ``target`` argument."""

    forward: nn.Module
    target: torch.Tensor | int | None
    rule: str  # "argmax", "index:<k>", "given", "reconstruction", "scalar"


def resolve_target(
    model: nn.Module, x: torch.Tensor, target: Target, *, batch_size: int = 256
) -> Resolved:
    """Resolve ``target`` against the model's output on ``x`` (eval, no grad).

    ``None`` -> the argmax class per sample of a (N, C) output (a scalar output
    (N,) or (N, 1) needs no target); an int -> that output index; a (N,) integer
    tensor -> one index per sample; ``"reconstruction"`` -> ``||f(x) - x||^2``;
    ``"auto"`` -> ``"reconstruction"`` when the output has the input's shape, else
    as ``None``.
    """
    if isinstance(target, str):
        if target not in TARGET_RULES:
            raise InvalidInputError(
                f"target must be None, an int, a tensor of indices, "
                f"'reconstruction' or 'auto', got {target!r}"
            )
        if target == "reconstruction":
            return _reconstruction(model, x)
    with torch.no_grad():
        probe = model(x[:1])
    if not isinstance(probe, torch.Tensor):
        raise InvalidInputError(
            f"the model returns {type(probe).__name__}; attribution needs one tensor"
        )
    if target == "auto":
        if probe.shape == x[:1].shape:
            return _reconstruction(model, x)
        target = None
    scalar = probe.ndim == 1 or (probe.ndim == 2 and probe.shape[1] == 1)
    if probe.ndim > 2:
        raise InvalidInputError(
            f"the model outputs {tuple(probe.shape[1:])} per sample; attribution "
            "takes a (N, classes) or (N,) output. For an autoencoder pass "
            "target='reconstruction'."
        )
    if target is None:
        if scalar:
            return Resolved(model, None, "scalar")
        with torch.no_grad():
            classes = torch.cat(
                [model(xb).argmax(1) for xb in x.split(batch_size)]
            )  # (N,)
        return Resolved(model, classes, "argmax")
    n_out = 1 if probe.ndim == 1 else probe.shape[1]
    if isinstance(target, int) and not isinstance(target, bool):
        if not 0 <= target < n_out:
            raise InvalidInputError(
                f"target {target} is outside the model's {n_out} outputs"
            )
        return Resolved(model, target, f"index:{target}")
    if isinstance(target, torch.Tensor):
        t = target.to(x.device).reshape(-1).long()  # (N,)
        if len(t) != len(x):
            raise InvalidInputError(
                f"target holds {len(t)} indices for {len(x)} samples; give one each"
            )
        if len(t) and (t.min() < 0 or t.max() >= n_out):
            raise InvalidInputError(f"target indices must lie in [0, {n_out})")
        return Resolved(model, t, "given")
    raise InvalidInputError(
        f"target must be None, an int, a tensor of indices, 'reconstruction' or "
        f"'auto', got {type(target).__name__}"
    )


def _reconstruction(model: nn.Module, x: torch.Tensor) -> Resolved:
    with torch.no_grad():
        probe = model(x[:1])
    if not isinstance(probe, torch.Tensor) or probe.shape != x[:1].shape:
        got = tuple(probe.shape) if isinstance(probe, torch.Tensor) else probe
        raise InvalidInputError(
            f"target='reconstruction' needs an output of the input's shape "
            f"{tuple(x[:1].shape)}, got {got}"
        )
    return Resolved(ReconstructionLoss(model), None, "reconstruction")
