"""The seven answers of the ``necks`` section on small models trained here.

Every model is trained in seconds on ``sklearn:digits`` (pixels in [0, 1];
seeded, one thread) on the train part of the split ``capacity`` draws by default
(``draw_split(1797, 0.2, seed=0)``), and analysed with the families the answers
come from; the ``necks`` table is printed for each. The models: the bundled demo
MLP; a small ``resnet`` (digits as 1x8x8 images); a ``conv_autoencoder`` and an
MLP ``vae`` trained to reconstruct digits; a ``unet`` trained to denoise them; the
small ``vit`` (digits upsampled to 32x32).
Numbers are reported, nothing is asserted.

    python bench/seven_answers.py                  # every model, 600 samples
    python bench/seven_answers.py --models vae,vit --samples 400 --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console

from analysis import analyse, build_model, load_dataset, set_threads
from analysis.capacity import draw_split
from analysis.datasets import Dataset
from analysis.report import bottleneck_table, necks_table
from contract.families import FAMILIES as SPECS

# what the necks family reads, and the necks family
FAMILIES = [*SPECS["necks"].after, "necks"]
SIGMA = 0.1  # the VAE's pixel noise: below the digits' pixel spread (about 0.3)
Loss = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _fit(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: Loss,
    steps: int,
    lr: float = 3e-3,
) -> torch.nn.Module:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        opt.zero_grad()
        loss(model, x[idx], y[idx]).backward()
        opt.step()
    return model.eval()


def _classify(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
    return F.cross_entropy(model(x), y)


def _reconstruct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
    return F.mse_loss(model(x), x)


def _denoise(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
    return F.mse_loss(model(x + 0.2 * torch.randn_like(x)), x)


def _elbo(model: Any, x: torch.Tensor, y: torch.Tensor) -> Any:
    """The negative ELBO with a Gaussian likelihood of standard deviation
    ``SIGMA`` per pixel, summed over pixels. With ``SIGMA = 1`` on pixels in
    [0, 1] the whole reconstruction term is about 2 nats, less than any code
    costs in KL: the optimum ignores ``z`` and every unit collapses (0 active
    units); with 0.1 the reconstruction pays for the code (8 of 8 active)."""
    mu, logvar = model.encode(x)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    rec = model.decode(z).reshape(x.shape)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar)
    rec_nll = ((rec - x) ** 2).flatten(1).sum(1).mean() / (2 * SIGMA**2)
    return rec_nll + kl.sum(1).mean()


def _models(
    x: torch.Tensor,
) -> dict[str, tuple[torch.nn.Module, torch.Tensor, Loss, int]]:
    img = x.reshape(-1, 1, 8, 8)  # (N, 1, 8, 8)
    big = F.interpolate(img, size=32, mode="bilinear", align_corners=False)
    return {
        "demo": (
            build_model(
                "mlp",
                {"in_features": 64, "widths": [128, 64, 8, 64], "out_features": 10},
            ),
            x,
            _classify,
            600,
        ),
        "resnet": (
            build_model(
                "resnet",
                {
                    "in_channels": 1,
                    "layers": [1, 1],
                    "widths": [16, 32],
                    "small_input": True,
                    "num_classes": 10,
                },
            ),
            img,
            _classify,
            300,
        ),
        "conv_autoencoder": (
            build_model(
                "conv_autoencoder",
                {"image_size": 8, "channels": [8, 16], "latent_dim": 4},
            ),
            img,
            _reconstruct,
            600,
        ),
        "vae": (build_model("vae", {"hidden": [64], "latent_dim": 8}), img, _elbo, 800),
        "unet": (
            build_model("unet", {"base_channels": 8, "depth": 2}),
            img,
            _denoise,
            300,
        ),
        "vit": (build_model("vit", {"in_channels": 1}), big, _classify, 200),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all")
    ap.add_argument("--samples", type=int, default=600)
    ap.add_argument("--json", default=None, help="write every necks section here")
    args = ap.parse_args()
    set_threads(1)
    console = Console(width=120)
    digits = load_dataset("sklearn:digits")
    chosen = _models(digits.x)
    train, _ = draw_split(len(digits.x), 0.2, seed=0)  # capacity's default split
    names = list(chosen) if args.models == "all" else args.models.split(",")
    out: dict[str, Any] = {}
    for name in names:
        model, x, loss, steps = chosen[name]
        _fit(model, x[train], digits.y[train], loss, steps)
        ds = Dataset(x, digits.y, f"sklearn:digits ({name})", "digits", digits.sha256)
        cfg = {
            "samples": args.samples,
            "metrics": FAMILIES,
            "mi": {"methods": ["ksg", "probe"]},
        }
        with tempfile.TemporaryDirectory() as tmp:
            result = analyse(model, ds, cfg, device="cpu", artifacts_dir=tmp).to_dict()
        console.rule(f"{name}: {result['provenance']['duration_s']:.1f} s")
        console.print(bottleneck_table(result))
        console.print(necks_table(result))
        for warning in result["warnings"]:
            console.print(f"warning: {warning}")
        out[name] = result.get("necks")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
