"""``latent``: what an autoencoder's or a VAE's code holds, at every bottleneck
whose pattern is ``latent``.

The posterior. The latent layer's output is the posterior mean ``mu`` (for a
plain autoencoder: the code). A VAE's log-variance head is found by hooking the
model: a sibling module (same parent) called on the very tensor the latent layer
reads, with an output of the same shape. Of the two heads, the mean is the one
whose output a later module reads (in eval the decoder reads ``mu``); when that
does not decide, the bottleneck's own layer is the mean. Without such a head
(a plain autoencoder, or one head that holds both halves) the KL rows are
``null`` with that reason.

Rows on the latent layer, each with a 95% delete-d jackknife interval from 20
seeded half-subsamples (``analysis._id_uncertainty``):

- ``latent_kl`` (VAE only): ``sum_j mean_x KL(N(mu_j, s_j^2) || N(0, 1))`` in
  nats, ``KL = (mu^2 + s^2 - 1 - log s^2) / 2``; ``params.per_dimension`` lists
  the terms.
- ``latent_active_units``: coordinates whose posterior mean varies over the data
  by more than ``threshold`` (Burda et al. 2016, "Importance Weighted
  Autoencoders", section 5.2).
- ``latent_prior_kl``: how far the aggregate posterior is from N(0, I), by a
  moment test: one ``z`` drawn from each q(z|x) (seeded; the code itself for an
  autoencoder), ``m`` and ``S`` their mean and maximum-likelihood covariance,
  ``KL(N(m, S) || N(0, I)) = (tr S + m'm - d - log det S) / 2``, and the
  likelihood-ratio test of ``mean = 0, covariance = I`` (Anderson 2003, section
  10.8): ``2 n KL`` against chi-squared with ``d (d + 3) / 2`` degrees of freedom,
  its p-value in ``params.p_value``. It tests the first two moments only: a
  non-Gaussian code with mean 0 and covariance I passes.

Traversals: the decoder's outputs as one coordinate moves over ``+-span``
standard deviations (of the posterior mean over the data) with the others fixed
at their mean, for the ``dims`` most active coordinates; drawn by replacing the
latent layer's output through a forward hook, saved as one PNG per latent
(rows: coordinates, columns: steps) in the artifacts folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from analysis._attr_files import _atomic_write, safe_name, to_image
from analysis._id_uncertainty import jackknife_interval, subsample_indices
from analysis.errors import DataError
from analysis.families import Context, Family, register, void
from analysis.hooks import module_name
from analysis.types import MetricValue

__all__ = ["Latent", "find_heads", "posterior_stats", "prior_test"]

_SUBSAMPLES, _LEVEL = 20, 0.95


@register
class Latent(Family):
    name = "latent"

    def section(self, ctx: Context) -> list[dict[str, Any]]:
        necks = [b for b in ctx.bottlenecks if b.pattern == "latent"]
        by_name = {layer.name: layer for layer in ctx.layers}
        out = []
        for neck in necks:
            entry = measure_latent(ctx, neck.layer)
            if neck.layer in by_name:
                by_name[neck.layer].metrics += entry["metrics"]
            entry["metrics"] = [m.model_dump() for m in entry["metrics"]]
            out.append(entry)
        return out

    def void_section(self, reason: str) -> list[dict[str, Any]]:
        return []


def measure_latent(ctx: Context, layer: str) -> dict[str, Any]:
    """The section entry of one latent layer: heads, statistics, rows, files."""
    section = ctx.section("latent")
    model, xs = ctx.model, ctx.xs
    mean, logvar = find_heads(model, xs[:2], module_name(layer))
    names = [mean] if logvar is None else [mean, logvar]
    outs = _collect(model, xs, names, ctx.config.batch_size)
    mu, lv = outs[0], (outs[1] if logvar is not None else None)
    for t, what in ((mu, mean), (lv, logvar)):
        if t is not None and not torch.isfinite(t).all():
            raise DataError(f"the output of {what} has non-finite values")
    stats = posterior_stats(mu, lv, threshold=section.threshold)
    prior = prior_test(mu, lv, seed=ctx.config.seed)
    rows = _rows(mu, lv, stats, prior, section.threshold, ctx.config.seed)
    picture = None
    if ctx.artifacts_dir is not None:
        picture = _traversals(ctx, layer, mean, mu, stats["variance"])
    return {
        "layer": layer,
        "mean_head": mean,
        "log_variance_head": logvar,
        "kl_reason": None if lv is not None else _NO_HEAD,
        "n_samples": len(mu),
        **stats,
        "prior_test": prior,
        "traversals": picture,
        "metrics": rows,
    }


_NO_HEAD = (
    "no log-variance head: a sibling of the latent layer called on its input with "
    "an output of its shape (a plain autoencoder has none)"
)


def find_heads(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[str, str | None]:
    """``(mean head, log-variance head or None)`` of the latent module ``layer``.

    Hooks every module for one forward of ``x`` (2 samples do); rules in the
    module docstring. Every hook is removed afterwards, also when the model raises.
    """
    calls: list[tuple[str, tuple[Any, ...], Any]] = []
    modules = dict(model.named_modules())
    with ExitStack() as stack, torch.no_grad(), _eval(model):
        for name, module in modules.items():
            if name:
                hook = module.register_forward_hook(_recorder(name, calls))
                stack.callback(hook.remove)
        model(x)
    own = [c for c in calls if c[0] == layer]
    if not own or not own[0][1] or not isinstance(own[0][2], torch.Tensor):
        return layer, None
    _, (t_in, *_), out = own[0]
    parent = layer.rpartition(".")[0]
    siblings = [
        c
        for c in calls
        if c[0] != layer
        and c[0].rpartition(".")[0] == parent
        and c[1]
        and c[1][0] is t_in
        and isinstance(c[2], torch.Tensor)
        and c[2].shape == out.shape
    ]
    if len(siblings) != 1:
        return layer, None
    other, _, other_out = siblings[0]

    def read(t: torch.Tensor) -> bool:
        return any(any(a is t for a in c[1]) for c in calls)

    if read(other_out) and not read(out):
        return other, layer
    return layer, other


def _recorder(
    name: str, calls: list[tuple[str, tuple[Any, ...], Any]]
) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        calls.append((name, args, output))

    return hook


class _eval:
    """Eval mode for the block; every module's flag restored afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.modes = [(m, m.training) for m in model.modules()]
        self.model = model

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for m, mode in self.modes:
            m.training = mode


def _collect(
    model: nn.Module, xs: torch.Tensor, names: list[str], batch_size: int
) -> list[torch.Tensor]:
    """The outputs of modules ``names`` over ``xs``, each (n, width) float32."""
    got: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    modules = dict(model.named_modules())
    with ExitStack() as stack, torch.no_grad(), _eval(model):
        for name in names:

            def keep(m: nn.Module, a: Any, out: Any, name: str = name) -> None:
                got[name].append(out.detach().flatten(1).float().clone())

            stack.callback(modules[name].register_forward_hook(keep).remove)
        for start in range(0, len(xs), batch_size):
            model(xs[start : start + batch_size])
    return [torch.cat(got[n]) for n in names]


def posterior_stats(
    mu: torch.Tensor, logvar: torch.Tensor | None, *, threshold: float = 0.01
) -> dict[str, Any]:
    """Per-coordinate variance of ``mu`` (n, d) over the data, the active units,
    and (with ``logvar`` (n, d)) the KL of q(z|x) to N(0, 1) averaged over x."""
    variance = mu.var(0)  # (d,)
    out: dict[str, Any] = {
        "variance": variance.tolist(),
        "active": (variance > threshold).nonzero().flatten().tolist(),
        "kl_per_dimension": None,
        "kl": None,
    }
    if logvar is not None:
        kl = _kl_terms(mu, logvar).mean(0)  # (d,)
        out["kl_per_dimension"] = kl.tolist()
        out["kl"] = float(kl.sum())
    return out


def _kl_terms(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar)  # (n, d)


def prior_test(
    mu: torch.Tensor, logvar: torch.Tensor | None, *, seed: int = 0
) -> dict[str, Any]:
    """Moment test of the aggregate posterior against N(0, I); module docstring."""
    z = mu
    if logvar is not None:
        g = torch.Generator(device=mu.device).manual_seed(seed)
        eps = torch.randn(mu.shape, generator=g, device=mu.device)
        z = mu + eps * (0.5 * logvar).exp()  # (n, d): one draw per q(z|x)
    kl = _gaussian_kl(z.double())
    n, d = z.shape
    df = d * (d + 3) // 2
    stat = 2.0 * n * kl
    from scipy.stats import chi2  # scipy comes with scikit-learn

    p = float(chi2.sf(stat, df)) if math.isfinite(stat) else 0.0
    return {
        "test": "gaussian likelihood ratio: mean 0 and covariance I (moments only)",
        "kl": kl,
        "statistic": stat,
        "df": df,
        "p_value": p,
    }


def _gaussian_kl(z: torch.Tensor) -> float:
    """KL(N(m, S) || N(0, I)) of the sample mean and ML covariance of ``z`` (n, d)."""
    m = z.mean(0)
    c = z - m
    S = c.T @ c / len(z)  # (d, d)
    sign, logdet = torch.linalg.slogdet(S)
    if sign <= 0:
        return math.inf
    return float(0.5 * (S.trace() + m @ m - len(m) - logdet))


def _rows(
    mu: torch.Tensor,
    lv: torch.Tensor | None,
    stats: dict[str, Any],
    prior: dict[str, Any],
    threshold: float,
    seed: int,
) -> list[MetricValue]:
    n = len(mu)
    m = n // 2
    subs = subsample_indices(n, m, _SUBSAMPLES, seed, mu.device)

    def row(
        metric: str, value: float, fn: Callable[[torch.Tensor], float], **params: Any
    ) -> MetricValue:
        low, high, _ = jackknife_interval(value, [fn(i) for i in subs], n, m, _LEVEL)
        return MetricValue(metric, "posterior", value, low, high, n, params)

    rows = []
    if lv is None:
        rows.append(void("latent_kl", "posterior", n, _NO_HEAD))
    else:
        rows.append(
            row(
                "latent_kl",
                stats["kl"],
                lambda i: float(_kl_terms(mu[i], lv[i]).mean(0).sum()),
                per_dimension=stats["kl_per_dimension"],
                unit="nats",
            )
        )
    rows.append(
        row(
            "latent_active_units",
            float(len(stats["active"])),
            lambda i: float((mu[i].var(0) > threshold).sum()),
            threshold=threshold,
            active=stats["active"],
        )
    )
    if not math.isfinite(prior["kl"]):
        reason = "the codes' covariance is singular: some coordinate is constant"
        rows.append(void("latent_prior_kl", "moment_test", n, reason))
    else:
        rows.append(
            row(
                "latent_prior_kl",
                prior["kl"],
                lambda i: prior_test(mu[i], None if lv is None else lv[i], seed=seed)[
                    "kl"
                ],
                p_value=prior["p_value"],
                statistic=prior["statistic"],
                df=prior["df"],
                test=prior["test"],
            )
        )
        rows[-1] = rows[-1].model_copy(update={"estimator": "moment_test"})
    return rows


def _traversals(
    ctx: Context, layer: str, mean: str, mu: torch.Tensor, variance: list[float]
) -> str:
    """Decode traversals of the most active coordinates; return the PNG's name."""
    section = ctx.section("latent")
    order = sorted(range(len(variance)), key=lambda j: -variance[j])[: section.dims]
    base, sd = mu.mean(0), mu.std(0)  # (d,), (d,)
    steps = torch.linspace(-section.span, section.span, section.steps)
    codes = base.repeat(len(order) * len(steps), 1)  # (k * steps, d)
    for r, j in enumerate(order):
        codes[r * len(steps) : (r + 1) * len(steps), j] += steps * sd[j]
    module = dict(ctx.model.named_modules())[mean]
    x0 = ctx.xs[:1].expand(len(codes), *ctx.xs.shape[1:])

    def replace(m: nn.Module, a: Any, out: torch.Tensor) -> torch.Tensor:
        return codes.to(out.device, out.dtype).reshape(out.shape)

    handle = module.register_forward_hook(replace)
    try:
        with torch.no_grad(), _eval(ctx.model):
            decoded = ctx.model(x0).reshape(len(order), len(steps), -1)
    finally:
        handle.remove()
    shape = ctx.xs.shape[1:]
    fig = Figure(figsize=(1.2 * len(steps), 1.2 * len(order) + 0.6), dpi=80)
    fig.suptitle(f"{layer}: one coordinate over +-{section.span:g} sd", fontsize=9)
    for r, j in enumerate(order):
        for c in range(len(steps)):
            ax = fig.add_subplot(len(order), len(steps), r * len(steps) + c + 1)
            sample = decoded[r, c].reshape(shape)
            ax.imshow(to_image(sample, rgb=True), cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"z{j}", fontsize=8)
            if r == 0:
                ax.set_title(f"{float(steps[c]):+.1f}", fontsize=8)
    name = f"latent.{safe_name(layer)}.traversals.png"
    out_dir = Path(ctx.artifacts_dir or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(out_dir, name, lambda f: fig.savefig(f, format="png"))
    return name
