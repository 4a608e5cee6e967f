"""``id``: the intrinsic dimension of every captured layer, by each estimator."""

from __future__ import annotations

import torch

from analysis.errors import DataError
from analysis.families import Context, Family, register, void
from analysis.intrinsic_dimension import estimate_id, shared_fits
from analysis.types import LayerInfo, MetricValue

METRIC = "intrinsic_dimension"


@register
class IntrinsicDimension(Family):
    name = "id"

    def layer_rows(
        self, ctx: Context, info: LayerInfo, acts: torch.Tensor
    ) -> list[MetricValue]:
        section = ctx.section("id")
        methods = {m: section.params.get(m, {}) for m in section.methods}
        rows = []
        # One neighbour search and one spectrum per row set for all the methods.
        with shared_fits(len(acts), methods):
            for method in section.methods:
                params = methods[method]
                try:
                    rows.append(
                        estimate_id(acts, method, seed=ctx.config.seed, **params)
                    )
                except DataError as exc:
                    rows.append(void(METRIC, method, len(acts), str(exc), params))
        return rows

    def void_rows(self, ctx: Context, reason: str) -> list[MetricValue]:
        section = ctx.section("id")
        return [void(METRIC, m, ctx.n, reason) for m in section.methods]
