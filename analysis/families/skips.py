"""``skips``: what the skip connection around each bottleneck carries.

The ``skips`` section holds one entry per bottleneck whose skip ``torch.fx`` finds
(``skip_connection`` true; a bottleneck without a skip has no entry, one whose
model cannot be traced an entry with the reason): the neck ``layer``, the
``block`` traced, the ``join`` (``add`` or ``cat``) and rows

- ``skip_identity_share`` (``energy``): mean over samples of
  ``||s||^2 / (||s||^2 + ||f(x)||^2)``, 1 when the branch adds nothing;
  interval: mean +- 1.96 standard errors, clipped to [0, 1];
- ``skip_cosine`` (``cosine``): mean cosine between identity and branch, same
  interval (``add`` only);
- ``cka_block_input_output`` and ``cka_block_input_branch``
  (``linear_cka_minibatch``): linear CKA of the block's input with its output
  and with the branch (:mod:`analysis.skips`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from analysis.families import Context, Family, register, void
from analysis.skips import find_join, skip_statistics
from analysis.types import MetricValue

SHARE, COSINE = "skip_identity_share", "skip_cosine"
CKA_OUT, CKA_BRANCH = "cka_block_input_output", "cka_block_input_branch"


@register
class Skips(Family):
    name = "skips"

    def section(self, ctx: Context) -> list[dict[str, Any]]:
        entries = []
        for neck in ctx.bottlenecks:
            if neck.skip_connection is False:
                continue
            entry: dict[str, Any] = {
                "layer": neck.layer,
                "block": neck.block,
                "join": None,
                "metrics": [],
                "reason": None,
            }
            join = (
                None
                if neck.skip_connection is None
                else find_join(ctx.model, neck.layer, neck.block)
            )
            if join is None:
                entry["reason"] = "torch.fx could not trace the block around the neck"
                entries.append(entry)
                continue
            stats = skip_statistics(
                ctx.model,
                ctx.xs,
                join,
                batch_size=ctx.config.batch_size,
                seed=ctx.config.seed,
            )
            entry.update(block=join.block, join=join.kind)
            rows = [_mean_row(SHARE, "energy", stats.share, (0.0, 1.0))]
            if stats.cosine is not None:
                rows.append(_mean_row(COSINE, "cosine", stats.cosine, (-1.0, 1.0)))
            else:
                rows.append(void(COSINE, "cosine", ctx.n, "a concatenation"))
            for metric, value in (
                (CKA_OUT, stats.cka_input_output),
                (CKA_BRANCH, stats.cka_input_branch),
            ):
                rows.append(
                    MetricValue(
                        metric,
                        "linear_cka_minibatch",
                        value,
                        n_samples=ctx.n,
                        reason=None if value is not None else stats.cka_reason,
                    )
                )
            entry["metrics"] = [r.model_dump() for r in rows]
            entries.append(entry)
        return entries

    def void_section(self, reason: str) -> list[dict[str, Any]]:
        return [{"layer": None, "metrics": [], "reason": reason}]


def _mean_row(
    metric: str, estimator: str, per_sample: torch.Tensor, bounds: tuple[float, float]
) -> MetricValue:
    v = per_sample.double()  # (n,)
    mean = float(v.mean())
    half = 1.96 * float(v.std()) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    low, high = max(bounds[0], mean - half), min(bounds[1], mean + half)
    return MetricValue(
        metric,
        estimator,
        mean,
        low,
        high,
        n_samples=len(v),
        params={"interval": "mean +- 1.96 standard errors"},
    )
