"""``cka``: linear CKA between captured layers (minibatch, unbiased HSIC), stored as
the ``similarity`` section; with ``cka.layers="auto"`` the blocks, stages and
bottlenecks among the captured layers, with ``"all"`` every captured layer."""

from __future__ import annotations

from typing import Any

from analysis.errors import DataError
from analysis.families import Context, Family, register
from analysis.similarity import cka_matrix


@register
class CKA(Family):
    name = "cka"

    def section(self, ctx: Context) -> dict[str, Any]:
        every = ctx.section("cka").layers == "all"
        chosen = {
            n: a for n, a in ctx.activations.items() if every or n in ctx.auto_layers
        }
        batch_size = max(4, ctx.config.batch_size)  # unbiased HSIC needs 4 rows
        section: dict[str, Any] = {
            "method": "linear_cka_minibatch",
            "batch_size": batch_size,
            "layers": list(chosen),
            "matrix": None,
            "reason": None,
        }
        try:
            names, matrix = cka_matrix(
                chosen, batch_size=batch_size, seed=ctx.config.seed
            )
        except DataError as exc:
            section["reason"] = str(exc)
            return section
        section["layers"] = names
        section["matrix"] = [[float(v) for v in row] for row in matrix.tolist()]
        return section

    def void_section(self, reason: str) -> dict[str, Any]:
        return {
            "method": "linear_cka_minibatch",
            "layers": [],
            "matrix": None,
            "reason": reason,
        }
