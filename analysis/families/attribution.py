"""``attribution``: Captum at every bottleneck; the summaries (over the seeded
``attribution.samples`` subset, with bootstrap intervals over it) also join their
layer's rows, the maps are saved under the artifacts folder.

Target ``"auto"``: the reconstruction when the model's output has the input's
shape (an autoencoder), else the predicted class; ``"predicted"``, ``"label"``
(each sample's true class: labels must index the model's outputs), an output
index, or ``"reconstruction"`` choose.
"""

from __future__ import annotations

from typing import Any

import torch

from analysis.config import AnalysisConfig
from analysis.errors import InvalidInputError
from analysis.families import Context, Family, register
from analysis.labels import check_labels


@register
class Attribution(Family):
    name = "attribution"

    def check(
        self, config: AnalysisConfig, ys: torch.Tensor | None, output: Any
    ) -> None:
        target = config.section("attribution").target
        if not isinstance(output, torch.Tensor) or output.ndim < 2:
            return
        n_outputs = output.flatten(1).shape[1]
        if target == "label":
            if ys is None or ys.is_floating_point():
                raise InvalidInputError(
                    'attribution.target "label" needs class labels; the dataset '
                    'has none: use "predicted" or an output index'
                )
            check_labels(ys, n_outputs)
        elif isinstance(target, int) and target >= n_outputs:
            raise InvalidInputError(
                f"attribution.target {target} is not an output of a model with "
                f"{n_outputs} outputs; use 0..{n_outputs - 1}"
            )

    def section(self, ctx: Context) -> list[dict[str, Any]]:
        from analysis.attribution import attribute_bottlenecks

        if not ctx.bottlenecks:
            return []
        assert ctx.artifacts_dir is not None  # the pipeline checks it up front
        section = ctx.section("attribution")
        target = {"predicted": None, "label": ctx.ys}.get(
            section.target, section.target
        )
        reports = attribute_bottlenecks(
            ctx.model,
            ctx.xs,
            ctx.bottlenecks,
            ctx.artifacts_dir,
            target=target,
            n_samples=section.samples,
            n_maps=section.maps,
            seed=ctx.config.seed,
            n_steps=section.steps,
            resamples=section.resamples,
        )
        by_name = {layer.name: layer for layer in ctx.layers}
        for entry in reports:
            entry |= _map_classes(ctx, entry.get("samples") or [])
            if entry["layer"] in by_name:
                by_name[entry["layer"]].metrics += entry["metrics"]
            entry["metrics"] = [m.model_dump() for m in entry["metrics"]]
        return reports

    def void_section(self, reason: str) -> list[dict[str, Any]]:
        return []


def _map_classes(ctx: Context, samples: list[int]) -> dict[str, list[int] | None]:
    """True label and predicted class of each sample with a saved map, so a report
    can mark the misclassified ones; ``None`` where there is no class to name."""
    if not samples:
        return {"labels": None, "predicted": None}
    rows = torch.as_tensor(samples, dtype=torch.long)
    labels = None
    if ctx.ys is not None and not ctx.ys.is_floating_point() and ctx.ys.ndim == 1:
        labels = [int(y) for y in ctx.ys[rows.to(ctx.ys.device)]]
    with torch.no_grad():
        out = ctx.model(ctx.xs[rows.to(ctx.xs.device)])
    predicted = None
    if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] > 1:
        predicted = [int(c) for c in out.argmax(1)]
    return {"labels": labels, "predicted": predicted}
