"""``receptive_field``: how much of the input each captured feature map sees.

Rows ``receptive_field_radius`` (input pixels, half the side of a centred square)
per layer whose output is a feature map descended from a spatial input:

- ``theoretical``: half the side of the theoretical field (kernel, stride and
  dilation composed, :func:`analysis.receptive_field.theoretical_fields`);
  ``params.size`` and ``params.jump`` per spatial dimension.
- ``effective_50`` / ``effective_90``: the half-width holding 50% / 90% of the
  effective receptive field's mass (Luo et al. 2016), the input gradient of the
  layer's centre unit averaged in absolute value over ``receptive_field.samples``
  samples; 95% percentile-bootstrap interval over those samples. With an
  artifacts folder, ``params.picture`` names a PNG of the mean map.

Flat layers (an MLP's, a transformer's tokens) get no rows.
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from analysis._attr_files import _atomic_write, safe_name
from analysis.families import Context, Family, register, void
from analysis.receptive_field import (
    Field,
    bootstrap_radius,
    effective_field,
    mass_radius,
    theoretical_fields,
)
from analysis.types import LayerInfo, MetricValue

METRIC = "receptive_field_radius"
ESTIMATORS = ("theoretical", "effective_50", "effective_90")


@register
class ReceptiveField(Family):
    name = "receptive_field"

    def layer_rows(
        self, ctx: Context, info: LayerInfo, acts: torch.Tensor
    ) -> list[MetricValue]:
        field = _fields(ctx).get(info.name)
        if field is None:
            return []
        section = ctx.section(self.name)
        xs = ctx.xs[: section.samples]  # ctx.xs is already a seeded subset
        rows = [
            MetricValue(
                METRIC,
                "theoretical",
                field.radius,
                field.radius,
                field.radius,
                n_samples=1,
                params={"size": list(field.size), "jump": list(field.jump)},
            )
        ]
        maps, centre = effective_field(ctx.model, xs, info.name)  # (n, *spatial)
        params: dict = {"centre": list(centre), "gradient": "sum over channels"}
        if ctx.artifacts_dir is not None and maps.ndim == 3:
            params["picture"] = _picture(ctx.artifacts_dir, info.name, maps, field)
        for q, estimator in ((0.5, "effective_50"), (0.9, "effective_90")):
            value, low, high = bootstrap_radius(
                maps, q, resamples=section.resamples, seed=ctx.config.seed
            )
            rows.append(
                MetricValue(
                    METRIC,
                    estimator,
                    value,
                    low,
                    high,
                    n_samples=len(xs),
                    params={**params, "mass": q, "interval": "bootstrap 95%"},
                )
            )
        return rows

    def void_rows(self, ctx: Context, reason: str) -> list[MetricValue]:
        return [void(METRIC, e, ctx.n, reason) for e in ESTIMATORS]


def _fields(ctx: Context) -> dict[str, Field]:
    if "receptive_field" not in ctx.cache:
        ctx.cache["receptive_field"] = theoretical_fields(ctx.model, ctx.xs[:1])
    return ctx.cache["receptive_field"]


def _picture(out_dir: Path, layer: str, maps: torch.Tensor, field: Field) -> str:
    """A PNG of the mean effective field with the 50% / 90% squares and the
    theoretical one; returns its name in ``out_dir``."""
    mean = maps.mean(0).cpu()  # (H, W)
    total = mean.sum().clamp_min(1e-30)
    cy = float((torch.arange(mean.shape[0]) * mean.sum(1)).sum() / total)
    cx = float((torch.arange(mean.shape[1]) * mean.sum(0)).sum() / total)
    fig = Figure(figsize=(4.2, 4.2), dpi=90)
    ax = fig.add_subplot()
    ax.imshow(mean.numpy(), cmap="inferno", interpolation="nearest")
    for radius, colour, label in (
        (mass_radius(mean, 0.5), "cyan", "50%"),
        (mass_radius(mean, 0.9), "lime", "90%"),
        (field.radius, "white", "theoretical"),
    ):
        ax.add_patch(
            Rectangle(
                (round(cx) - radius, round(cy) - radius),
                2 * radius,
                2 * radius,
                fill=False,
                edgecolor=colour,
                label=f"{label}: {radius:.1f}",
            )
        )
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"effective receptive field of {layer}", fontsize=9)
    fig.tight_layout()
    filename = f"receptive_field.{safe_name(layer)}.png"
    _atomic_write(out_dir, filename, lambda f: fig.savefig(f, format="png"))
    return filename
