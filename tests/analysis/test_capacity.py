"""Capacity: MLPs of three neck widths trained here on a small task.

Asserted: a gap measured for each model, finite and equal to train minus
held-out; the table in width order; the ID at each neck finite and at most the
neck's width; a drawn split is the same for the same seed."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from analysis.architectures import build_model
from analysis.capacity import capacity_table, draw_split
from analysis.datasets import load_dataset
from analysis.errors import InvalidInputError


def train_mlp(width: int, x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    """64 -> 64 -> width -> 64 -> 10, Adam, 100 full-batch steps, seed 0."""
    torch.manual_seed(0)
    model = build_model(
        "mlp", {"in_features": 64, "widths": [64, width, 64], "out_features": 10}
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.slow  # about 10 s on a busy 2-core machine
def test_gap_per_width_in_width_order() -> None:
    data = load_dataset("sklearn:digits")
    x, y = data.x.float() / 16.0, data.y
    train, held = draw_split(len(x), held_out=0.3, seed=0)
    series = [
        (w, train_mlp(w, x[train], y[train]), (x[train], y[train]), (x[held], y[held]))
        for w in (16, 2, 4)
    ]
    rows = capacity_table(series, samples=300)
    assert [r["width"] for r in rows] == [2, 4, 16]
    for r in rows:
        assert r["layer"] == "fc1"  # the neck of widths [64, w, 64]
        assert math.isfinite(r["gap"])
        assert r["gap"] == pytest.approx(r["train"] - r["held_out"])
        assert 0 < r["held_out"] <= 1 and 0 < r["train"] <= 1
        assert 0 < r["id"]["value"] <= r["width"] + 1e-6
    losses = capacity_table(series, score="loss", samples=300)
    assert all(r["gap"] == pytest.approx(r["held_out"] - r["train"]) for r in losses)


def test_drawn_split_is_stored_by_its_seed() -> None:
    a, b = draw_split(100, 0.2, seed=3)
    assert len(b) == 20 and len(a) == 80
    assert set(a.tolist()).isdisjoint(b.tolist())
    assert torch.equal(b, draw_split(100, 0.2, seed=3)[1])
    assert not torch.equal(b, draw_split(100, 0.2, seed=4)[1])
    with pytest.raises(InvalidInputError):
        draw_split(100, 1.5)
