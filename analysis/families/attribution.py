"""``attribution``: Captum at every bottleneck; the summaries also join their
layer's rows, the maps are saved under the artifacts folder.

Target ``"auto"``: the reconstruction when the model's output has the input's
shape (an autoencoder), else the predicted class; ``"predicted"``, an output
index, or ``"reconstruction"`` choose.
"""

from __future__ import annotations

from typing import Any

from analysis.families import Context, Family, register


@register
class Attribution(Family):
    name = "attribution"

    def section(self, ctx: Context) -> list[dict[str, Any]]:
        from analysis.attribution import attribute_bottlenecks

        if not ctx.bottlenecks:
            return []
        assert ctx.artifacts_dir is not None  # the pipeline checks it up front
        section = ctx.section("attribution")
        target = None if section.target == "predicted" else section.target
        reports = attribute_bottlenecks(
            ctx.model,
            ctx.xs,
            ctx.bottlenecks,
            ctx.artifacts_dir,
            target=target,
            n_maps=section.maps,
            seed=ctx.config.seed,
            n_steps=section.steps,
        )
        by_name = {layer.name: layer for layer in ctx.layers}
        for entry in reports:
            if entry["layer"] in by_name:
                by_name[entry["layer"]].metrics += entry["metrics"]
            entry["metrics"] = [m.model_dump() for m in entry["metrics"]]
        return reports

    def void_section(self, reason: str) -> list[dict[str, Any]]:
        return []
