"""The architecture registry and the built-in models."""

from __future__ import annotations

import itertools
import json
import re
import sys
import tomllib
import types
import warnings
from importlib import metadata
from pathlib import Path

import pytest
import torch
from torch import nn

from analysis.architectures import available_architectures, build_model
from analysis.errors import InvalidInputError, UnknownArchitectureError

# (name, custom config, input for the custom config, expected output shape)
CASES = [
    (
        "mlp",
        {
            "in_features": 12,
            "widths": [32, 4, 32],
            "out_features": 3,
            "activation": "gelu",
        },
        torch.randn(5, 3, 4),
        (5, 3),
    ),
    (
        "conv_autoencoder",
        {"in_channels": 3, "image_size": 16, "channels": [8, 16, 32], "latent_dim": 4},
        torch.randn(2, 3, 16, 16),
        (2, 3, 16, 16),
    ),
    (
        "resnet",
        {
            "in_channels": 1,
            "num_classes": 10,
            "layers": [1, 2],
            "widths": [8, 16],
            "stem_width": 8,
            "small_input": True,
        },
        torch.randn(2, 1, 8, 8),
        (2, 10),
    ),
    (
        "unet",
        {"in_channels": 3, "out_channels": 2, "base_channels": 4, "depth": 2},
        torch.randn(2, 3, 12, 12),
        (2, 2, 12, 12),
    ),
]
DEFAULT_INPUTS = {
    "mlp": (torch.randn(2, 64), (2, 10)),
    "conv_autoencoder": (torch.randn(2, 1, 32, 32), (2, 1, 32, 32)),
    "resnet": (torch.randn(2, 3, 64, 64), (2, 1000)),
    "unet": (torch.randn(2, 1, 16, 16), (2, 1, 16, 16)),
}


def test_available_lists_builtins():
    assert {"mlp", "conv_autoencoder", "resnet", "unet"} <= set(
        available_architectures()
    )


@pytest.mark.parametrize("name", sorted(DEFAULT_INPUTS))
def test_defaults_build_and_run(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x, shape = DEFAULT_INPUTS[name]
    with torch.no_grad():
        assert tuple(model(x).shape) == shape


@pytest.mark.parametrize(("name", "config", "x", "shape"), CASES)
def test_custom_config_runs_and_traces(name, config, x, shape):
    torch.manual_seed(0)
    model = build_model(name, config).eval()
    with torch.no_grad():
        expected = model(x)
        assert tuple(expected.shape) == shape
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(traced(x), expected)


def test_default_resnet_is_resnet50():
    model = build_model("resnet")
    assert sum(p.numel() for p in model.parameters()) == 25_557_032
    # torchvision's state-dict names, so its weights load unchanged
    keys = model.state_dict().keys()
    assert "layer4.2.bn3.running_var" in keys
    assert "layer1.0.downsample.1.num_batches_tracked" in keys
    assert model.fc.in_features == 2048
    torch.fx.symbolic_trace(model)


def test_resnet_block_reuses_one_relu():
    model = build_model("resnet", {"layers": [1], "widths": [4], "stem_width": 4})
    block = model.layer1[0]
    calls = []
    block.relu.register_forward_hook(lambda *_: calls.append(1))
    model(torch.randn(1, 3, 32, 32))
    assert len(calls) == 3
    assert [n for n, _ in block.named_children()] == [
        "conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu", "downsample"
    ]  # fmt: skip


def test_mlp_layer_names_and_separate_activations():
    model = build_model("mlp", {"widths": [8, 2, 8], "activation": "tanh"})
    names = [n for n, _ in model.named_children()]
    assert names == ["flatten", "fc0", "act0", "fc1", "act1", "fc2", "act2", "head"]
    acts = [m for m in model if isinstance(m, nn.Tanh)]
    assert len({id(m) for m in acts}) == 3


def test_autoencoder_latent_is_narrowest_and_accepts_flat_input():
    model = build_model("conv_autoencoder", {"image_size": 8, "latent_dim": 3})
    assert {"encoder", "to_latent", "from_latent", "decoder"} <= {
        n for n, _ in model.named_children()
    }
    assert model(torch.randn(4, 64)).shape == (4, 64)
    z = model.to_latent(model.encoder(torch.randn(4, 1, 8, 8)))
    assert z.shape == (4, 3)


def test_unet_flat_width_shrinks_to_bottom():
    model = build_model("unet", {"base_channels": 4, "depth": 3})
    out: dict[str, tuple[int, ...]] = {}
    names = ["down1", "down2", "down3", "bottom", "up1", "up2", "up3"]
    for n in names:
        getattr(model, n).register_forward_hook(
            lambda m, i, o, n=n: out.__setitem__(n, tuple(o.shape[1:]))
        )
    model(torch.randn(1, 1, 32, 32))
    downs = [out[n] for n in names[:4]]
    for (c0, h0, w0), (c1, h1, w1) in itertools.pairwise(downs):
        assert (h1, w1) == (h0 // 2, w0 // 2)
        assert c0 < c1 <= 2 * c0
    widths = {n: c * h * w for n, (c, h, w) in out.items()}
    assert min(widths, key=widths.__getitem__) == "bottom"
    assert out["bottom"][0] == max(c for c, _, _ in out.values())


@pytest.mark.parametrize(
    ("name", "config", "key"),
    [
        ("mlp", {"widht": [3]}, "widht"),
        ("mlp", {"in_features": 2.5}, "in_features"),  # 2.0 is JSON for 2
        ("mlp", {"in_features": True}, "in_features"),
        ("mlp", {"widths": [4, "8"]}, "widths"),
        ("mlp", {"widths": [4, 0]}, "widths"),
        ("mlp", {"activation": "sigmoid"}, "activation"),
        ("conv_autoencoder", {"image_size": 30}, "image_size"),
        ("resnet", {"layers": [1, 1], "widths": [8]}, "widths"),
        ("resnet", {"small_input": 1}, "small_input"),
        ("unet", {"depth": 0}, "depth"),
    ],
)
def test_bad_config_names_the_key(name, config, key):
    with pytest.raises(InvalidInputError, match=repr(key)) as info:
        build_model(name, config)
    if "accepted keys" not in str(info.value):
        pytest.fail(f"no accepted keys in: {info.value}")


def test_config_must_be_a_dict():
    with pytest.raises(InvalidInputError, match="dict"):
        build_model("mlp", [1, 2])  # type: ignore[arg-type]


def test_unknown_name_lists_available():
    with pytest.raises(UnknownArchitectureError, match=r"mlp.*resnet"):
        build_model("resnet50")


def _tiny(config):
    return nn.Linear(config.get("n", 2), 1)


def _fake_entry_points(*eps):
    def entry_points(*, group):
        assert group == "bottlelens.architectures"
        return metadata.EntryPoints(eps)

    return entry_points


def _ep(name, value):
    return metadata.EntryPoint(name, value, "bottlelens.architectures")


def test_entry_point_architecture(monkeypatch):
    monkeypatch.setattr(
        metadata,
        "entry_points",
        _fake_entry_points(_ep("tiny", "tests.analysis.test_architectures:_tiny")),
    )
    assert "tiny" in available_architectures()
    model = build_model("tiny", {"n": 5})
    assert isinstance(model, nn.Linear) and model.in_features == 5


def test_entry_point_cannot_shadow_builtin(monkeypatch):
    monkeypatch.setattr(
        metadata,
        "entry_points",
        _fake_entry_points(_ep("mlp", "tests.analysis.test_architectures:_tiny")),
    )
    with pytest.warns(UserWarning, match="shadow the built-in architecture 'mlp'"):
        names = available_architectures()
    assert names.count("mlp") == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not isinstance(build_model("mlp"), nn.Linear)


def test_entry_point_failures_are_domain_errors(monkeypatch):
    monkeypatch.setattr(
        metadata,
        "entry_points",
        _fake_entry_points(
            _ep("broken", "tests.analysis.no_such_module:x"),
            _ep("notmodule", "tests.analysis.test_architectures:CASES"),
        ),
    )
    with pytest.raises(InvalidInputError, match="failed to load"):
        build_model("broken")
    with pytest.raises(InvalidInputError, match="not callable"):
        build_model("notmodule")


def _raises(config):
    raise ValueError("num_classes must be positive\nsecond line of the message")


def test_a_plugin_builder_that_raises_is_one_domain_error(monkeypatch):
    monkeypatch.setattr(
        metadata,
        "entry_points",
        _fake_entry_points(_ep("raiser", "tests.analysis.test_architectures:_raises")),
    )
    with pytest.raises(InvalidInputError) as info:
        build_model("raiser", {"num_classes": 3})
    msg = str(info.value)
    assert "'raiser'" in msg and "tests.analysis.test_architectures:_raises" in msg
    assert (
        "failed to build the model: ValueError: num_classes" in msg and "\n" not in msg
    )
    assert isinstance(info.value.__cause__, ValueError)


README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_blocks(section: str) -> dict[str, list[str]]:
    """The fenced code blocks of one README section, by language."""
    text = README.read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[str]] = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S):
        blocks.setdefault(lang, []).append(body)
    return blocks


def test_readme_plugin_example_builds_through_the_entry_point(monkeypatch):
    """The README's builder, its entry-point lines and its command, run against a
    fake torchvision-style constructor (no torchvision here)."""
    blocks = _readme_blocks("Your own architectures")
    (code,) = blocks["python"]
    (toml,) = blocks["toml"]
    (command,) = blocks["bash"]
    ((name, target),) = tomllib.loads(toml)["project"]["entry-points"][
        "bottlelens.architectures"
    ].items()
    module_name, attr = target.split(":")

    class FakeResNet(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.fc = nn.Linear(512, num_classes)

    fake_tv = types.ModuleType("torchvision")
    fake_tv.models = types.SimpleNamespace(  # type: ignore[attr-defined]
        resnet18=lambda num_classes=1000: FakeResNet(num_classes)
    )
    monkeypatch.setitem(sys.modules, "torchvision", fake_tv)
    package = types.ModuleType(module_name.split(".")[0])
    package.__path__ = []  # type: ignore[attr-defined]
    module = types.ModuleType(module_name)
    exec(compile(code, "README.md", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, package.__name__, package)
    monkeypatch.setitem(sys.modules, module_name, module)
    monkeypatch.setattr(
        metadata, "entry_points", _fake_entry_points(_ep(name, f"{module_name}:{attr}"))
    )

    arch = re.search(r"--arch (\S+)", command).group(1)
    arch_config = json.loads(re.search(r"--arch-config '([^']*)'", command).group(1))
    assert arch == name and arch in available_architectures()
    model = build_model(arch, arch_config)
    assert isinstance(model, FakeResNet) and model.fc.out_features == 10
    assert build_model(arch).fc.out_features == 1000  # the config's default
