"""``mi``: I(X;T) (``mi_input``) and I(T;Y) (``mi_output``) of every captured layer
for each estimator: the information plane.

``probe`` needs labels and only gives ``mi_output``; ``gaussian`` refuses class
labels (its formula on one-hot labels is not a bound and grows past H(Y)), so with
labels its ``mi_output`` row is ``null`` with that reason; ksg, binning or probe
answer it. Without labels there is no ``mi_output``. The probe estimator's folds are
the ``probe`` section's ``cv``.

One ``MIMemo`` per analysis (in ``ctx.cache``, shared with the ``probe`` family)
keeps what is computed from one tensor alone: the input's PCA, bins and distinct
rows serve every layer, and a layer's PCA its several estimators.
"""

from __future__ import annotations

from typing import Any

import torch

from analysis.capture import layer_seed
from analysis.errors import DataError
from analysis.families import Context, Family, register, void
from analysis.mutual_information import MIMemo, estimate_mi
from analysis.projection import SparseRandomProjection
from analysis.types import LayerInfo, MetricValue

INPUT_NAME = "<input>"  # the projection-seed name of the flattened input


def run_memo(ctx: Context) -> MIMemo:
    """The analysis's ``MIMemo``, made on first use."""
    memo = ctx.cache.get("mi_memo")
    if memo is None:
        memo = ctx.cache["mi_memo"] = MIMemo()
    return memo


def flat_input(x: torch.Tensor, budget: int, seed: int) -> tuple[torch.Tensor, Any]:
    """The inputs as X of I(X;T): flattened, projected like a layer when wider
    than the budget. Returns ``(X (n, w), projection description or None)``."""
    X = x.flatten(1).float()  # (n, D)
    if X.shape[1] <= budget:
        return X, None
    proj = SparseRandomProjection(
        X.shape[1], budget, layer_seed(seed, INPUT_NAME), device=X.device
    )
    return proj(X), proj.describe()


@register
class MutualInformation(Family):
    name = "mi"

    def _params(self, ctx: Context, method: str) -> dict[str, Any]:
        params = dict(ctx.section("mi").params.get(method, {}))
        if method == "probe":
            params["cv"] = ctx.section("probe").cv
        return params

    def layer_rows(
        self, ctx: Context, info: LayerInfo, acts: torch.Tensor
    ) -> list[MetricValue]:
        if "mi_input" not in ctx.cache:
            ctx.cache["mi_input"] = flat_input(
                ctx.xs, ctx.config.budget, ctx.config.seed
            )
        x, note = ctx.cache["mi_input"]  # (n, <= budget)
        y, memo = ctx.ys, run_memo(ctx)
        discrete = y is not None and not y.is_floating_point()
        rows = []
        for method in ctx.section("mi").methods:
            params = self._params(ctx, method)
            if method != "probe":
                row = _mi(x, acts, method, "mi_input", ctx.config.seed, params, memo)
                if note is not None:
                    row.params["input_projection"] = note
                rows.append(row)
            if y is None:
                continue
            if method == "gaussian" and discrete:
                reason = "discrete Y: no Gaussian bound"
                rows.append(void("mi_output", method, len(acts), reason, params))
                continue
            rows.append(
                _mi(acts, y, method, "mi_output", ctx.config.seed, params, memo)
            )
        return rows

    def void_rows(self, ctx: Context, reason: str) -> list[MetricValue]:
        rows = []
        for method in ctx.section("mi").methods:
            if method != "probe":
                rows.append(void("mi_input", method, ctx.n, reason))
            if ctx.ys is not None:
                rows.append(void("mi_output", method, ctx.n, reason))
        return rows


def _mi(
    a: torch.Tensor,
    b: torch.Tensor,
    method: str,
    metric: str,
    seed: int,
    params: dict[str, Any],
    memo: MIMemo,
) -> MetricValue:
    try:
        return estimate_mi(a, b, method, seed=seed, metric=metric, memo=memo, **params)
    except DataError as exc:
        return void(metric, method, len(a), str(exc), params)
