"""``probe``: cross-validated linear-probe accuracy of every captured layer (the
layer's PCA through the analysis's ``MIMemo``, shared with the ``mi`` family)."""

from __future__ import annotations

import torch

from analysis.errors import DataError
from analysis.families import Context, Family, register, void
from analysis.families.mi import run_memo
from analysis.probes import probe_accuracy
from analysis.types import LayerInfo, MetricValue

METRIC, ESTIMATOR = "probe_accuracy", "logistic_regression"


@register
class Probe(Family):
    name = "probe"

    def layer_rows(
        self, ctx: Context, info: LayerInfo, acts: torch.Tensor
    ) -> list[MetricValue]:
        y = ctx.ys
        if y is None or y.is_floating_point():
            return []  # the pipeline runs a class-label family only with labels
        cv = ctx.section("probe").cv
        try:
            return [
                probe_accuracy(acts, y, seed=ctx.config.seed, cv=cv, memo=run_memo(ctx))
            ]
        except DataError as exc:
            return [void(METRIC, ESTIMATOR, len(acts), str(exc), {"cv": cv})]

    def void_rows(self, ctx: Context, reason: str) -> list[MetricValue]:
        return [void(METRIC, ESTIMATOR, ctx.n, reason)]
