"""profile() and capture() against hand-computed forward passes of tiny models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis.architectures import build_model
from analysis.capture import capture, layer_seed, profile
from analysis.errors import InvalidInputError, ShapeMismatchError


class Block(nn.Module):
    """conv1 -> relu -> conv2 -> bn, ``out += x``, relu: in place, like torchvision."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 2, 1)
        self.conv2 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.conv1(x))
        out = self.bn(self.conv2(out))
        out += x
        return self.relu(out)


class Net(nn.Module):
    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.block = Block()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(4, 5)
        self.fail_after = fail_after
        self.calls = 0
        torch.manual_seed(0)
        self.block.bn.running_mean.normal_()
        self.block.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("model failed")
        x = self.block(self.relu(self.stem(x)))
        return self.head(self.flatten(self.pool(x)))


NAMES = [
    "stem",
    "relu",
    "block.conv1",
    "block.relu",
    "block.conv2",
    "block.bn",
    "block.relu#2",
    "block",
    "pool",
    "flatten",
    "head",
]


def manual(net: Net, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same forward pass without in-place operations, eval mode."""
    b = net.block
    with torch.no_grad():
        stem = net.stem(x)
        r1 = F.relu(stem)
        c1 = b.conv1(r1)
        r2 = F.relu(c1)
        c2 = b.conv2(r2)
        bn = F.batch_norm(
            c2,
            b.bn.running_mean,
            b.bn.running_var,
            b.bn.weight,
            b.bn.bias,
            eps=b.bn.eps,
        )
        r3 = F.relu(bn + r1)
        pool = r3.mean((2, 3), keepdim=True)
        head = net.head(pool.flatten(1))
    values = [stem, r1, c1, r2, c2, bn, r3, r3, pool, pool.flatten(1), head]
    return {n: v.reshape(len(x), -1) for n, v in zip(NAMES, values, strict=True)}


def assert_no_hooks(model: nn.Module) -> None:
    for module in model.modules():
        assert not module._forward_hooks
        assert not module._forward_pre_hooks


def test_profile_records_every_call() -> None:
    net = Net()
    layers = profile(net, torch.randn(2, 3, 6, 6))
    assert [layer.name for layer in layers] == NAMES
    assert [layer.index for layer in layers] == list(range(len(NAMES)))
    by_name = {layer.name: layer for layer in layers}
    assert by_name["stem"].shape == (4, 6, 6)
    assert by_name["stem"].width == 144
    assert by_name["block.conv1"].shape == (2, 6, 6)
    assert by_name["pool"].shape == (4, 1, 1)
    assert by_name["head"].shape == (5,)
    assert by_name["block.relu#2"].module == "ReLU"
    assert by_name["block.relu#2"].parent == "block"
    assert by_name["block"].parent == ""
    assert by_name["block"].module == "Block"
    assert not by_name["block"].is_leaf
    assert by_name["block.conv1"].is_leaf
    assert_no_hooks(net)


def test_capture_equals_manual_forward_despite_in_place_ops() -> None:
    net = Net()
    x = torch.randn(7, 3, 6, 6)
    cap = capture(net, x, budget=10_000)
    expected = manual(net, x)
    assert [layer.name for layer in cap.layers] == NAMES
    for name in NAMES:
        torch.testing.assert_close(cap.activations[name], expected[name])
        assert cap.activations[name].dtype == torch.float32
    # the stem's output is later overwritten by the in-place ReLU, block.bn's by
    # ``out += x``: what was captured is the value before that
    assert (cap.activations["stem"] < 0).any()
    assert not torch.allclose(cap.activations["block.bn"], expected["block.relu#2"])
    assert cap.outputs is not None
    torch.testing.assert_close(cap.outputs, expected["head"])
    assert_no_hooks(net)


def test_reused_relu_in_a_resnet_block_gives_three_records() -> None:
    net = build_model(
        "resnet",
        {"layers": [1], "widths": [4], "stem_width": 8, "small_input": True},
    )
    x = torch.randn(5, 3, 8, 8)
    names = ["layer1.0.relu", "layer1.0.relu#2", "layer1.0.relu#3", "maxpool"]
    cap = capture(net.eval(), x, names=names, budget=10_000)
    a = cap.activations
    assert list(a) == ["maxpool", *names[:3]]  # execution order
    block = net.layer1[0]
    with torch.no_grad():
        inp = a["maxpool"].reshape(5, 8, 8, 8)
        r1 = F.relu(block.bn1(block.conv1(inp)))
        r2 = F.relu(block.bn2(block.conv2(r1)))
        r3 = F.relu(block.bn3(block.conv3(r2)) + block.downsample(inp))
    for name, value in zip(names[:3], (r1, r2, r3), strict=True):
        torch.testing.assert_close(a[name], value.reshape(5, -1))
    assert a["layer1.0.relu"].shape[1] != a["layer1.0.relu#3"].shape[1]
    assert not torch.allclose(a["layer1.0.relu"], a["layer1.0.relu#2"])


def test_streaming_in_batches_equals_one_batch() -> None:
    net = Net()
    x = torch.randn(10, 3, 6, 6)
    whole = capture(net, x, batch_size=10)
    calls: list[tuple[int, int]] = []
    streamed = capture(net, x, batch_size=3, progress=lambda d, t: calls.append((d, t)))
    listed = capture(net, [x[:4], (x[4:], torch.zeros(6))])  # (x, y) batches
    gen = capture(net, (x[i : i + 5] for i in range(0, 10, 5)))
    assert calls == [(3, 10), (6, 10), (9, 10), (10, 10)]
    for other in (streamed, listed, gen):
        assert other.layers == whole.layers
        for name, value in whole.activations.items():
            torch.testing.assert_close(other.activations[name], value)


def test_progress_total_is_minus_one_for_an_iterator() -> None:
    calls: list[tuple[int, int]] = []
    x = torch.randn(6, 3, 6, 6)
    capture(Net(), iter([x[:2], x[2:]]), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, -1), (6, -1)]


def test_wide_layers_are_projected_and_keep_distances() -> None:
    net = build_model(
        "mlp", {"in_features": 32, "widths": [6000, 8], "out_features": 3}
    )
    x = torch.randn(40, 32)
    full = capture(net, x, budget=10_000)
    cap = capture(net, x, budget=2048, seed=3)
    info = {layer.name: layer for layer in cap.layers}
    assert info["fc0"].width == 6000
    assert info["fc0"].projected_to == 2048
    assert info["fc0"].projection is not None
    assert info["fc0"].projection["seed"] == layer_seed(3, "fc0")
    assert info["act0"].projection["seed"] != info["fc0"].projection["seed"]
    assert info["fc1"].projected_to is None  # 8 <= budget
    assert cap.activations["fc0"].shape == (40, 2048)
    for name in ("fc0", "act0"):
        d_full = torch.pdist(full.activations[name].double()) ** 2
        d_proj = torch.pdist(cap.activations[name].double()) ** 2
        err = (d_proj / d_full - 1).abs()  # std <= sqrt(2/2048) = 3.1%
        assert err.max() < 0.15
    again = capture(net, x, budget=2048, seed=3)
    assert torch.equal(again.activations["fc0"], cap.activations["fc0"])


def test_exact_globs_keep_full_width() -> None:
    net = build_model(
        "mlp", {"in_features": 32, "widths": [6000, 8], "out_features": 3}
    )
    x = torch.randn(4, 32)
    cap = capture(net, x, budget=16, exact=["fc*"])
    info = {layer.name: layer for layer in cap.layers}
    assert info["fc0"].projected_to is None
    assert cap.activations["fc0"].shape == (4, 6000)
    assert info["act0"].projected_to == 16
    with torch.no_grad():
        torch.testing.assert_close(cap.activations["fc0"], net.fc0(x))


def test_outputs_dropped_when_wider_than_budget() -> None:
    net = build_model("mlp", {"in_features": 8, "widths": [4], "out_features": 300})
    assert capture(net, torch.randn(3, 8), budget=100).outputs is None
    assert capture(net, torch.randn(3, 8), budget=300).outputs.shape == (3, 300)


def test_mode_restored_and_hooks_removed_after_success() -> None:
    net = Net().train()
    net.block.bn.eval()  # a module frozen on purpose stays frozen
    profile(net, torch.randn(2, 3, 6, 6))
    capture(net, torch.randn(4, 3, 6, 6), batch_size=2)
    assert net.training and net.block.training and net.stem.training
    assert not net.block.bn.training
    assert_no_hooks(net)


def test_hooks_removed_and_mode_restored_when_the_model_raises() -> None:
    net = Net(fail_after=1).train()
    with pytest.raises(RuntimeError, match="model failed"):
        capture(net, torch.randn(4, 3, 6, 6), batch_size=2)
    assert net.training
    assert_no_hooks(net)


class Odd(nn.Module):
    """A tuple output, a None output and a dict output."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 5, batch_first=True)
        self.nothing = Nothing()
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x)
        self.nothing(seq)
        return self.head(seq[:, -1])


class Nothing(nn.Module):
    def forward(self, x: torch.Tensor) -> None:
        return None


def test_tuple_outputs_take_the_first_tensor_and_others_are_skipped() -> None:
    net = Odd()
    layers = profile(net, torch.randn(2, 4, 3))
    assert [(layer.name, layer.module) for layer in layers] == [
        ("lstm", "LSTM[0]"),
        ("head", "Linear"),
    ]
    assert layers[0].shape == (4, 5)
    with pytest.raises(InvalidInputError, match="nothing"):
        capture(net, torch.randn(2, 4, 3), names=["nothing"])


def test_unknown_names_and_bad_arguments_raise() -> None:
    net = Net()
    x = torch.randn(2, 3, 6, 6)
    with pytest.raises(InvalidInputError, match="stem#2"):
        capture(net, x, names=["stem#2"])
    with pytest.raises(InvalidInputError):
        capture(net, x, batch_size=0)
    with pytest.raises(InvalidInputError):
        capture(net, x[:0])
    with pytest.raises(InvalidInputError):
        profile(net, torch.tensor(1.0))
    assert_no_hooks(net)


def test_inputs_of_another_size_in_a_later_batch_raise() -> None:
    net = Net()
    with pytest.raises(ShapeMismatchError, match="one size"):
        capture(net, [torch.randn(2, 3, 6, 6), torch.randn(2, 3, 8, 8)])
    assert_no_hooks(net)


class _SometimesIdentity(nn.Module):
    """Returns its input itself in the first call, a new tensor afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x if self.calls == 1 else x + 1.0


def test_an_identity_output_is_stored_once_with_its_source_projection() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Identity(), nn.Identity()).eval()
    x = torch.randn(10, 4)  # (10, 4)
    for budget in (64, 4):  # kept exactly, then projected to 4
        cap = capture(net, x, batch_size=3, budget=budget)
        first = cap.activations["0"]
        for name in ("1", "2"):
            assert cap.activations[name].data_ptr() == first.data_ptr()
        infos = {info.name: info for info in cap.layers}
        assert infos["1"].projection == infos["0"].projection
        with torch.no_grad():
            expected = net[0](x)  # (10, 8)
        if budget == 64:
            torch.testing.assert_close(first, expected, rtol=0, atol=0)


@pytest.mark.parametrize("streamed", [False, True])
def test_an_output_that_stops_being_its_input_gets_its_own_storage(
    streamed: bool,
) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), _SometimesIdentity()).eval()
    x = torch.randn(10, 4)  # (10, 4)
    # batches of 4, 4, 2: aliased in the first; an iterator has no known length
    data = iter(list(x.split(4))) if streamed else x
    cap = capture(net, data, batch_size=4)
    with torch.no_grad():
        h = net[0](x)  # (10, 8)
    expected = torch.cat([h[:4], h[4:] + 1.0])
    torch.testing.assert_close(cap.activations["1"], expected, rtol=0, atol=0)
    torch.testing.assert_close(cap.activations["0"], h, rtol=0, atol=0)
    assert cap.activations["1"].data_ptr() != cap.activations["0"].data_ptr()


def test_an_in_place_activation_is_not_taken_for_its_input() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True)).eval()
    x = torch.randn(10, 4)  # (10, 4)
    cap = capture(net, x, batch_size=4)
    with torch.no_grad():
        h = net[0](x)  # (10, 8)
    torch.testing.assert_close(cap.activations["0"], h, rtol=0, atol=0)
    torch.testing.assert_close(cap.activations["1"], h.clamp_min(0), rtol=0, atol=0)
