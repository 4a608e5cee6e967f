"""The dry run: a correct pair runs, a wrong one says what to change."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis.architectures import build_model
from analysis.errors import InvalidInputError, ShapeMismatchError
from analysis.intake import dry_run


def _no_hooks(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks for m in model.modules()
    )


def test_correct_pair_runs_on_two_samples_in_eval_mode():
    model = build_model("mlp", {"in_features": 12, "widths": [8]}).train()
    out = dry_run(model, torch.randn(10, 3, 4))
    assert out.shape == (2, 10) and not out.requires_grad
    assert model.training and _no_hooks(model)


def test_eval_mode_during_the_run():
    model = build_model("resnet", {"small_input": True, "layers": [1], "widths": [4]})
    seen = []
    model.bn1.register_forward_hook(lambda m, i, o: seen.append(m.training))
    dry_run(model, torch.randn(3, 3, 8, 8))
    assert seen == [False] and model.training


def test_wrong_feature_count_names_both_shapes():
    model = build_model("mlp")  # in_features=64
    with pytest.raises(ShapeMismatchError) as info:
        dry_run(model, torch.randn(4, 12))
    msg = str(info.value)
    assert "samples of shape (12,) and dtype torch.float32" in msg
    assert "'fc0' is Linear(in_features=64)" in msg
    assert "each sample has 12 values but 'fc0' takes 64" in msg
    assert "mat1 and mat2" in msg  # the original error
    assert isinstance(info.value.__cause__, RuntimeError)
    assert _no_hooks(model) and model.training


def test_wrong_channels_name_the_conv():
    model = build_model("resnet", {"small_input": True, "layers": [1], "widths": [4]})
    with pytest.raises(ShapeMismatchError) as info:
        dry_run(model, torch.randn(3, 1, 8, 8))
    msg = str(info.value)
    assert "samples of shape (1, 8, 8)" in msg
    assert "it failed in 'conv1' (Conv2d), which got input (2, 1, 8, 8)" in msg
    assert "Conv2d(in_channels=3)" in msg
    assert _no_hooks(model)


def test_failure_deep_inside_names_the_innermost_module():
    model = build_model("unet", {"depth": 2, "base_channels": 4})
    with pytest.raises(ShapeMismatchError, match=r"failed in 'up1' \(Up\)"):
        dry_run(model, torch.randn(2, 1, 6, 6))  # 6 is no multiple of 2**2


def test_float64_data_for_a_float32_model():
    with pytest.raises(
        ShapeMismatchError, match=r"torch\.float64.*x\.to\(torch\.float32\)"
    ):
        dry_run(build_model("mlp"), torch.randn(4, 64, dtype=torch.float64))


def test_empty_data_refused():
    with pytest.raises(InvalidInputError, match="N >= 1"):
        dry_run(build_model("mlp"), torch.zeros(0, 64))


@pytest.mark.parametrize("fails", [False, True])
def test_each_module_keeps_its_own_training_flag(fails):
    """A BatchNorm frozen in eval mode inside a training model stays frozen, after
    a run and after a failure."""
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU()).train()
    model[1].eval()  # frozen: keeps its running statistics
    before = {name: m.training for name, m in model.named_modules()}
    x = torch.randn(5, 3 if fails else 4)
    if fails:
        with pytest.raises(ShapeMismatchError):
            dry_run(model, x)
    else:
        dry_run(model, x)
    assert {name: m.training for name, m in model.named_modules()} == before
    assert model.training and not model[1].training and _no_hooks(model)
