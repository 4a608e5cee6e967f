"""The ``latent`` family against known answers: closed-form KL, a moment test on
exact Gaussians, and a VAE trained here on data with two generative factors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from analysis.architectures import build_model
from analysis.families.latent import find_heads, posterior_stats, prior_test
from analysis.pipeline import analyse


def two_factor_data(n: int = 1000, seed: int = 0) -> torch.Tensor:
    """(n, 64): two uniform factors through a fixed random nonlinear map, 5% noise,
    standardised per feature."""
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(n, 2, generator=g) * 2 - 1  # (n, 2)
    a, b = torch.randn(2, 16, generator=g), torch.randn(16, 64, generator=g) / 4
    x = torch.tanh(f @ a) @ b + 0.05 * torch.randn(n, 64, generator=g)  # (n, 64)
    return (x - x.mean(0)) / x.std(0)


def train_vae(x: torch.Tensor, steps: int, seed: int = 0) -> torch.nn.Module:
    """Adam, batch 128; loss: 0.5 x squared error + KL (weight 1)."""
    torch.manual_seed(seed)
    model = build_model("vae", {"hidden": [64], "latent_dim": 8})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        xb = x[torch.randint(0, len(x), (128,), generator=g)]
        mu, logvar = model.encode(xb)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = model.decode(z).reshape(len(xb), -1)
        kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar)
        loss = 0.5 * ((rec - xb) ** 2).sum(1).mean() + kl.sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return two_factor_data()


@pytest.fixture(scope="module")
def trained(data: torch.Tensor) -> torch.nn.Module:
    return train_vae(data, steps=600)  # about 4 s on one thread


def posterior(model: torch.nn.Module, x: torch.Tensor) -> tuple:
    with torch.no_grad():
        return model.encode(x)


def test_kl_per_dimension_is_the_closed_form() -> None:
    # mu = 1, log s^2 = 0: KL = 1/2; mu = 0, log s^2 = log 4: (4 - 1 - log 4) / 2
    mu = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4)], [0.0, math.log(4)]])
    stats = posterior_stats(mu, logvar)
    assert stats["kl_per_dimension"] == pytest.approx([0.5, (3 - math.log(4)) / 2])
    assert stats["active"] == []  # neither mean varies over the data


def test_moment_test_accepts_the_prior_and_refuses_a_shifted_one() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 4, generator=g)
    same = prior_test(z, None)
    assert same["kl"] < 0.005 and same["p_value"] > 0.05 and same["df"] == 14
    # N(0.5, I): KL = |m|^2 / 2 = 4 * 0.25 / 2 = 0.5
    shifted = prior_test(z + 0.5, None)
    assert shifted["kl"] == pytest.approx(0.5, abs=0.03)
    assert shifted["p_value"] < 1e-10


def test_trained_vae_has_two_active_units(
    trained: torch.nn.Module, data: torch.Tensor
) -> None:
    stats = posterior_stats(*posterior(trained, data))
    assert 1 <= len(stats["active"]) <= 3  # two generative factors, 2 (+-1)


def test_untrained_vae_is_far_from_the_prior(
    trained: torch.nn.Module, data: torch.Tensor
) -> None:
    # measured with seed 0: untrained 0.195 nats, trained 0.031 (6.3x)
    torch.manual_seed(0)
    untrained = build_model("vae", {"hidden": [64], "latent_dim": 8}).eval()
    before = prior_test(*posterior(untrained, data))["kl"]
    after = prior_test(*posterior(trained, data))["kl"]
    assert before > 3 * after


def test_heads_are_found_by_hooks_and_every_hook_is_removed() -> None:
    model = build_model("vae", {})
    assert find_heads(model, torch.randn(2, 64), "mu") == ("mu", "logvar")
    # the log-variance head named as the layer: the decoder reads mu, so mu wins
    assert find_heads(model, torch.randn(2, 64), "logvar") == ("mu", "logvar")
    assert all(not m._forward_hooks for m in model.modules())
    ae = build_model("conv_autoencoder", {"image_size": 8, "channels": [4]})
    assert find_heads(ae, torch.randn(2, 1, 8, 8), "to_latent.fc") == (
        "to_latent.fc",
        None,
    )


def test_pipeline_rows_section_and_traversals(
    trained: torch.nn.Module, data: torch.Tensor, tmp_path: Path
) -> None:
    config = {"metrics": ["latent"], "samples": 400, "seed": 0}
    result = analyse(trained, data, config, device="cpu", artifacts_dir=tmp_path)
    (entry,) = result.sections["latent"]
    assert (entry["mean_head"], entry["log_variance_head"]) == ("mu", "logvar")
    mu_layer = next(layer for layer in result.layers if layer.name == "mu")
    rows = {m.metric: m for m in mu_layer.metrics}
    active = rows["latent_active_units"]
    assert 1 <= active.value <= 3 and active.ci_low <= active.value <= active.ci_high
    assert rows["latent_kl"].value == pytest.approx(entry["kl"])
    assert rows["latent_prior_kl"].params["p_value"] == entry["prior_test"]["p_value"]
    picture = tmp_path / entry["traversals"]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(not m._forward_hooks for m in trained.modules())


def test_plain_autoencoder_has_no_kl_and_says_why(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("conv_autoencoder", {"image_size": 8, "channels": [4]})
    x = torch.randn(60, 1, 8, 8)
    result = analyse(model, x, {"metrics": ["latent"]}, artifacts_dir=tmp_path)
    (entry,) = result.sections["latent"]
    assert entry["log_variance_head"] is None and entry["kl"] is None
    layer = next(layer for layer in result.layers if layer.name == "to_latent.fc")
    kl = next(m for m in layer.metrics if m.metric == "latent_kl")
    assert kl.value is None and "log-variance head" in (kl.reason or "")
    assert (tmp_path / entry["traversals"]).exists()
