"""Scoped forward hooks: call names, completion order, nothing left behind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis.hooks import call_name, forward_hooks, module_name


class Reuse(nn.Module):
    """``relu`` is called three times, ``block`` holds two leaves."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.relu = nn.ReLU()
        self.block = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
        self.fail = fail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc(x))
        x = self.relu(self.block(x))
        if self.fail:
            raise RuntimeError("boom")
        return self.relu(x)


def assert_no_hooks(model: nn.Module) -> None:
    for name, module in model.named_modules():
        assert not module._forward_hooks, name
        assert not module._forward_pre_hooks, name
        assert not module._forward_hooks_with_kwargs, name
        assert not module._forward_hooks_always_called, name


def test_names_count_calls_in_completion_order() -> None:
    model = Reuse()
    seen: list[str] = []
    with forward_hooks(model, lambda name, module, out: seen.append(name)):
        model(torch.randn(2, 4))
        first = list(seen)
        model(torch.randn(2, 4))  # counters restart with each root call
    expected = ["fc", "relu", "block.0", "block.1", "block", "relu#2", "relu#3"]
    assert first == expected
    assert seen == expected * 2
    assert_no_hooks(model)


def test_callback_gets_module_and_output() -> None:
    model = Reuse()
    outs: dict[str, tuple[nn.Module, torch.Tensor]] = {}
    with forward_hooks(model, lambda n, m, o: outs.__setitem__(n, (m, o.clone()))):
        y = model(torch.randn(3, 4))
    assert outs["relu#3"][0] is model.relu
    torch.testing.assert_close(outs["relu#3"][1], y)
    assert outs["block"][0] is model.block


def test_modules_filter_keeps_call_numbers() -> None:
    model = Reuse()
    seen: list[str] = []
    with forward_hooks(model, lambda n, m, o: seen.append(n), modules={"relu"}):
        model(torch.randn(2, 4))
    assert seen == ["relu", "relu#2", "relu#3"]
    assert_no_hooks(model)


def test_no_hook_left_when_the_model_raises() -> None:
    model = Reuse(fail=True)
    with (
        pytest.raises(RuntimeError, match="boom"),
        forward_hooks(model, lambda n, m, o: None),
    ):
        model(torch.randn(2, 4))
    assert_no_hooks(model)


def test_no_hook_left_when_the_callback_raises() -> None:
    model = Reuse()

    def callback(name: str, module: nn.Module, output: object) -> None:
        raise ValueError(name)

    with pytest.raises(ValueError, match="fc"), forward_hooks(model, callback):
        model(torch.randn(2, 4))
    assert_no_hooks(model)


def test_existing_hooks_survive() -> None:
    model = Reuse()
    handle = model.fc.register_forward_hook(lambda m, i, o: None)
    with forward_hooks(model, lambda n, m, o: None):
        model(torch.randn(2, 4))
    assert list(model.fc._forward_hooks) == [handle.id]
    handle.remove()


def test_name_helpers() -> None:
    assert call_name("layer1.0.relu", 1) == "layer1.0.relu"
    assert call_name("layer1.0.relu", 3) == "layer1.0.relu#3"
    assert module_name("layer1.0.relu#3") == "layer1.0.relu"
    assert module_name("fc") == "fc"
