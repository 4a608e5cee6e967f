"""The bundled demo: a bottleneck classifier trained on ``sklearn:digits`` in seconds.

``bottlelens demo`` trains it, saves it as safetensors, loads it back through the same
strict intake a user's file goes through, and analyses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from analysis.architectures import build_model
from analysis.datasets import load_dataset

DEMO_ARCHITECTURE = "mlp"
DEMO_CONFIG: dict[str, Any] = {
    "in_features": 64,
    "widths": [128, 64, 8, 64],
    "out_features": 10,
    "activation": "relu",
}
DEMO_DATASET = "sklearn:digits"


@dataclass
class DemoModel:
    weights: Path
    architecture: str
    config: dict[str, Any]
    dataset: str
    train_accuracy: float
    test_accuracy: float


def train_demo_model(
    out_dir: str | Path, *, epochs: int = 60, seed: int = 0
) -> DemoModel:
    """Train the demo MLP (64-128-64-8-64-10) on digits and save it as safetensors.

    Full-batch Adam on a seeded 80/20 split; about two seconds on one CPU core,
    ~95% test accuracy. Returns where the weights are and how well it learned.
    """
    torch.manual_seed(seed)
    ds = load_dataset(DEMO_DATASET)
    x, y = ds.x.flatten(1), ds.y  # (N, 64), (N,)
    assert y is not None
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(x))
    train, test = perm[:split], perm[split:]
    model = build_model(DEMO_ARCHITECTURE, DEMO_CONFIG)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for batch in torch.split(train[torch.randperm(len(train))], 128):
            opt.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        train_acc = (model(x[train]).argmax(1) == y[train]).float().mean().item()
        test_acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "demo_mlp.safetensors"
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(weights),
        metadata={"architecture": DEMO_ARCHITECTURE, "dataset": DEMO_DATASET},
    )
    return DemoModel(
        weights, DEMO_ARCHITECTURE, dict(DEMO_CONFIG), DEMO_DATASET, train_acc, test_acc
    )
