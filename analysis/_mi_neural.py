"""The InfoNCE lower bound with a trained critic (private; public through
``analysis.mutual_information``)."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn


def _mlp(
    d_in: int, hidden: int, layers: int, d_out: int, g: torch.Generator
) -> nn.Sequential:
    dims = [d_in] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        mods += [nn.Linear(a, b), nn.ReLU()]
    mods.append(nn.Linear(dims[-1], d_out))
    net = nn.Sequential(*mods)
    # Seeded initialisation (PyTorch's default scheme) without the global RNG.
    for m in net:
        if isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            with torch.no_grad():
                m.weight.uniform_(-bound, bound, generator=g)
                m.bias.uniform_(-bound, bound, generator=g)
    return net


class SeparableCritic(nn.Module):
    """``f(x, y) = g(x) . h(y) / sqrt(embed)``: one matmul scores a whole batch."""

    def __init__(
        self, dx: int, dy: int, hidden: int, layers: int, embed: int, seed: int
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.g = _mlp(dx, hidden, layers, embed, g)
        self.h = _mlp(dy, hidden, layers, embed, g)
        self.scale = 1.0 / math.sqrt(embed)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.g(x) @ self.h(y).T * self.scale  # (B, B): f(x_i, y_j)


def infonce_bound(scores: torch.Tensor) -> torch.Tensor:
    """``ln B + mean_i (f_ii - logsumexp_j f_ij)`` of a ``(B, B)`` score matrix: at
    most ``ln B``, since each term in the mean is at most 0."""
    B = scores.shape[0]
    f = scores.to(torch.float64)
    return math.log(B) + (f.diagonal() - torch.logsumexp(f, dim=1)).mean()


def infonce(
    X: torch.Tensor,
    Y: torch.Tensor,
    *,
    batch_size: int,
    steps: int,
    lr: float,
    hidden: int,
    layers: int,
    embed: int,
    test_fraction: float,
    seed: int,
) -> tuple[float, int]:
    """The InfoNCE bound (van den Oord et al. 2018; Poole et al. 2019) of a
    separable critic trained with Adam on ``1 - test_fraction`` of the rows, then
    averaged over disjoint batches of the held-out rows; returns it (nats) and the
    evaluation batch size ``B`` (the bound's ceiling is ``ln B``).

    ``X`` (N, Dx), ``Y`` (N, Dy) float (one-hot for class labels); columns are
    z-scored with the training rows' statistics. All randomness (split, batches,
    initialisation) comes from ``seed``.
    """
    N = X.shape[0]
    dev = X.device
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(N, generator=g).to(dev)
    n_test = max(2, round(test_fraction * N))
    test, train = perm[:n_test], perm[n_test:]
    # Gradients even when the caller runs under no_grad or inference_mode (whose
    # tensors autograd cannot save: the inputs are copied out of it).
    with torch.inference_mode(False), torch.enable_grad():
        X, Y = _zscore_by(X.clone(), train), _zscore_by(Y.clone(), train)
        critic = SeparableCritic(X.shape[1], Y.shape[1], hidden, layers, embed, seed)
        critic.to(dev)
        opt = torch.optim.Adam(critic.parameters(), lr=lr, foreach=True)
        b_train = min(batch_size, train.numel())
        for _ in range(steps):
            pick = train[torch.randperm(train.numel(), generator=g)[:b_train].to(dev)]
            loss = -infonce_bound(critic(X[pick], Y[pick]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    B = min(batch_size, n_test)
    order = test[torch.randperm(n_test, generator=g).to(dev)]
    with torch.no_grad():
        bounds = [
            float(infonce_bound(critic(X[idx], Y[idx])))
            for idx in order[: (n_test // B) * B].view(-1, B)
        ]
    return min(sum(bounds) / len(bounds), math.log(B)), B


def _zscore_by(A: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    mean = A[rows].mean(dim=0)
    std = A[rows].std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return ((A - mean) / std).to(torch.float32)  # (N, D)
