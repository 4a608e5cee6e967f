"""The built-in ``vae``: shapes, eval decodes the mean, state dicts in safetensors,
and the analysis sees its mean head as a ``latent`` bottleneck."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from analysis.architectures import build_model
from analysis.bottlenecks import find_bottlenecks
from analysis.capture import profile
from analysis.checkpoints import load_model
from analysis.errors import InvalidInputError

CONV = {"kind": "conv", "hidden": [8, 16], "image_size": 16}


@pytest.mark.parametrize(
    ("config", "shape"),
    [({}, (3, 64)), ({}, (3, 1, 8, 8)), (CONV, (3, 1, 16, 16)), (CONV, (3, 256))],
)
def test_output_has_the_input_shape_and_eval_decodes_the_mean(
    config: dict, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    model = build_model("vae", config).eval()
    x = torch.randn(shape)
    out = model(x)
    assert out.shape == x.shape
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, 8)
    torch.testing.assert_close(out, model.decode(mu).reshape(x.shape))
    torch.testing.assert_close(model(x), out)  # eval is deterministic


def test_training_samples_with_the_reparameterisation() -> None:
    torch.manual_seed(0)
    model = build_model("vae", {}).train()
    x = torch.randn(4, 64)
    with torch.no_grad():
        a, b = model(x), model(x)
        mean = model.decode(model.encode(x)[0]).reshape(x.shape)
    assert not torch.allclose(a, b)  # eps differs between calls
    assert not torch.allclose(a, mean)


def test_state_dict_round_trips_through_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("vae", CONV)
    path = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    loaded, _ = load_model("vae", CONV, path)
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(loaded(x), model.eval()(x))


@pytest.mark.parametrize(("config", "shape"), [({}, (2, 64)), (CONV, (2, 1, 16, 16))])
def test_the_mean_head_is_a_latent_bottleneck(config: dict, shape: tuple) -> None:
    model = build_model("vae", config)  # in training mode: traced in eval
    (neck,) = find_bottlenecks(
        profile(model, torch.randn(shape)), model=model, reconstructs=True
    )
    assert (neck.layer, neck.width, neck.kind) == ("mu", 8, "dense")
    assert neck.skip_connection is False  # mu + eps * std is training-only
    assert neck.pattern == "latent"
    assert model.training


def test_bad_config_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="image_size"):
        build_model("vae", {"kind": "conv", "hidden": [8, 16, 32], "image_size": 12})
    with pytest.raises(InvalidInputError, match="kind"):
        build_model("vae", {"kind": "flow"})
