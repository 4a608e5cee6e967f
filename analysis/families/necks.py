"""``necks``: the seven questions about each bottleneck, answered side by side.

The section (:class:`contract.necks.NecksResult`) reads the rows and sections of
the families that ran before it (``after`` in its spec); it measures nothing
itself. For each bottleneck:

- ``entering`` / ``leaving``: the nearest captured layer before / after the neck
  (execution order) that is at least ``bottleneck_factor`` times wider than it,
  the same factor that made it a bottleneck; ``None`` when none was captured
  (capture more with ``layers``).
- ``compression``: for every ID estimator and every I(X;T) estimator, the change
  entering->neck and neck->leaving. Interval: the difference of the two rows'
  intervals taken conservatively, ``[lo_b - hi_a, hi_b - lo_a]``, which holds
  the true difference whenever both intervals hold theirs. Verdict
  ``compresses`` / ``expands`` when the interval excludes 0, else ``unclear``.
- ``task``: the fraction of I(T;Y) (each estimator) and of probe accuracy kept
  at the neck, ``neck / entering``, interval ``[lo_n / hi_e, hi_n / lo_e]``;
  ``kept`` when it reaches 1, ``reduced`` when it lies below 1.
- ``answers``: one headline per question of :data:`contract.necks.QUESTIONS`
  (the first ID estimator of the config for ``compresses``, the first I(T;Y)
  estimator for ``keeps_task``), or ``not applicable`` with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from analysis.families import Context, Family, register
from analysis.types import Bottleneck
from contract.necks import (
    NOT_APPLICABLE,
    QUESTIONS,
    Answer,
    NecksResult,
    NeckSummary,
    Source,
)

METHOD = {
    "entering_leaving": "nearest captured layer before/after the neck at least "
    "bottleneck_factor times wider",
    "change_interval": "[lo_b - hi_a, hi_b - lo_a] of the rows' own intervals",
    "fraction_interval": "[lo_neck / hi_entering, hi_neck / lo_entering]",
}
ID, MI_IN, MI_OUT, PROBE = (
    "intrinsic_dimension",
    "mi_input",
    "mi_output",
    "probe_accuracy",
)
RF = "receptive_field_radius"


@register
class Necks(Family):
    name = "necks"

    def section(self, ctx: Context) -> dict[str, Any]:
        necks = [_summary(ctx, b) for b in ctx.bottlenecks]
        return NecksResult(method=METHOD, necks=necks).model_dump()

    def void_section(self, reason: str) -> dict[str, Any]:
        return NecksResult(method=METHOD, reason=reason).model_dump()


def _summary(ctx: Context, neck: Bottleneck) -> NeckSummary:
    by_name = {layer.name: layer for layer in ctx.layers}
    here = by_name.get(neck.layer)
    out = NeckSummary(layer=neck.layer, block=neck.block)
    if here is None:
        missing = "the neck layer was not captured; add it to layers"
        out.answers = {q: _na(q, missing) for q in QUESTIONS}
        return out
    factor = ctx.config.bottleneck_factor
    position = ctx.layers.index(here)
    wide = [layer.width >= factor * here.width for layer in ctx.layers]
    before = [i for i in range(position) if wide[i]]
    after = [i for i in range(position + 1, len(ctx.layers)) if wide[i]]
    entering = ctx.layers[before[-1]] if before else None
    leaving = ctx.layers[after[0]] if after else None
    out.entering = None if entering is None else entering.name
    out.leaving = None if leaving is None else leaving.name
    for metric in (ID, MI_IN):
        for estimator in _estimators(here, metric):
            for a, b in ((entering, here), (here, leaving)):
                out.compression.append(_change(a, b, metric, estimator, "compresses"))
    for metric in (MI_OUT, PROBE):
        for estimator in _estimators(here, metric):
            out.task.append(_kept(entering, here, metric, estimator))
    out.answers = {
        "compresses": _first(out.compression, "compresses", ctx, ("id", "mi")),
        "keeps_task": _first(out.task, "keeps_task", ctx, ("mi", "probe")),
        "latent_factors": _from_section(ctx, "latent", neck, "latent_factors"),
        "receptive_field": _receptive_field(ctx, entering, here),
        "skip_carries_input": _skip(ctx, neck),
        "gaussian_latent": _from_section(ctx, "latent", neck, "gaussian_latent"),
        "capacity": _from_section(ctx, "capacity", neck, "capacity"),
    }
    return out


def _na(question: str, reason: str, **fields: Any) -> Answer:
    return Answer(question=question, verdict=NOT_APPLICABLE, reason=reason, **fields)


def _estimators(layer: Any, metric: str) -> list[str]:
    return list(dict.fromkeys(m.estimator for m in layer.metrics if m.metric == metric))


def _row(layer: Any, metric: str, estimator: str) -> Any:
    return None if layer is None else layer.metric(metric, estimator)


def _source(layer: Any, metric: str, estimator: str) -> Source:
    return Source(layer=layer.name, metric=metric, estimator=estimator)


def _change(a: Any, b: Any, metric: str, estimator: str, question: str) -> Answer:
    """``b - a`` of one metric with the conservative interval and its verdict."""
    step = f"{'?' if a is None else a.name}->{'?' if b is None else b.name}"
    fields: dict[str, Any] = {"metric": metric, "estimator": estimator, "step": step}
    if a is None or b is None:
        return _na(question, "no captured layer that much wider on this side", **fields)
    ra, rb = _row(a, metric, estimator), _row(b, metric, estimator)
    sources = [_source(x, metric, estimator) for x in (a, b)]
    if ra is None or rb is None or ra.value is None or rb.value is None:
        return _na(question, _why(ra, rb), sources=sources, **fields)
    value = rb.value - ra.value
    bounds = (ra.ci_low, ra.ci_high, rb.ci_low, rb.ci_high)
    if any(x is None for x in bounds):
        return Answer(
            question=question,
            value=value,
            verdict="unclear",
            reason="a side has no interval",
            sources=sources,
            **fields,
        )
    low, high = rb.ci_low - ra.ci_high, rb.ci_high - ra.ci_low
    verdict = "compresses" if high < 0 else "expands" if low > 0 else "unclear"
    return Answer(
        question=question,
        value=value,
        ci_low=low,
        ci_high=high,
        verdict=verdict,
        sources=sources,
        **fields,
    )


def _why(*rows: Any) -> str:
    """Why a pair of rows gives no answer: the first row's own reason."""
    if any(r is None for r in rows):
        return "a side has no such row"
    return next((r.reason for r in rows if r.reason), "a side has no value")


def _kept(entering: Any, neck: Any, metric: str, estimator: str) -> Answer:
    """The fraction ``neck / entering`` of a task metric, with its interval."""
    step = f"{'?' if entering is None else entering.name}->{neck.name}"
    fields: dict[str, Any] = {"metric": metric, "estimator": estimator, "step": step}
    if entering is None:
        return _na("keeps_task", "no captured layer entering the neck", **fields)
    re_, rn = _row(entering, metric, estimator), _row(neck, metric, estimator)
    sources = [_source(x, metric, estimator) for x in (entering, neck)]
    if re_ is None or rn is None or re_.value is None or rn.value is None:
        why = _why(re_, rn)
        return _na("keeps_task", why, sources=sources, **fields)
    if not re_.value > 0:
        why = "the layer entering the neck holds none of it (value <= 0)"
        return _na("keeps_task", why, sources=sources, **fields)
    value = rn.value / re_.value
    if None in (re_.ci_low, re_.ci_high, rn.ci_low, rn.ci_high) or not re_.ci_low > 0:
        return Answer(
            question="keeps_task",
            value=value,
            verdict="unclear",
            reason="no interval, or the entering interval reaches 0",
            sources=sources,
            **fields,
        )
    low, high = rn.ci_low / re_.ci_high, rn.ci_high / re_.ci_low
    return Answer(
        question="keeps_task",
        value=value,
        ci_low=low,
        ci_high=high,
        verdict="kept" if high >= 1 else "reduced",
        sources=sources,
        **fields,
    )


def _first(
    answers: Sequence[Answer], question: str, ctx: Context, families: Sequence[str]
) -> Answer:
    """The headline: the first answer with a value, rows being in the config's
    order (the first estimator of the first family, entering->neck first); the
    first answer when none has one."""
    if not any(f in ctx.config.metrics for f in families):
        return _na(question, f"{' and '.join(families)} did not run")
    valued = [a for a in answers if a.value is not None]
    if valued or answers:
        return (valued or list(answers))[0]
    return _na(question, "no row of the neck for this question")


def _receptive_field(ctx: Context, entering: Any, neck: Any) -> Answer:
    q = "receptive_field"
    if "receptive_field" not in ctx.config.metrics:
        return _na(q, "receptive_field did not run")
    if _row(neck, RF, "effective_50") is None:
        return _na(q, "the neck is not a feature map of a spatial input")
    answer = _change(entering, neck, RF, "effective_50", q)
    verdicts = {"compresses": "narrows", "expands": "widens"}
    return answer.model_copy(
        update={"verdict": verdicts.get(answer.verdict, answer.verdict)}
    )


def _skip(ctx: Context, neck: Bottleneck) -> Answer:
    q = "skip_carries_input"
    if neck.skip_connection is False:
        return _na(q, "no skip connection around this neck")
    if "skips" not in ctx.sections:
        return _na(q, "skips did not run")
    entries = ctx.sections["skips"] or []
    entry = next((e for e in entries if e.get("layer") == neck.layer), None)
    if entry is None or entry.get("reason"):
        why = (entry or {}).get("reason") or "no skip measured at this neck"
        return _na(q, why)
    row = next(
        (m for m in entry["metrics"] if m["metric"] == "skip_identity_share"), None
    )
    if row is None or row["value"] is None:
        return _na(q, (row or {}).get("reason") or "no identity share")
    low, high = row["ci_low"], row["ci_high"]
    verdict = "identity" if low > 0.5 else "branch" if high < 0.5 else "unclear"
    return Answer(
        question=q,
        metric=row["metric"],
        estimator=row["estimator"],
        step=entry.get("block") or "(model)",
        value=row["value"],
        ci_low=low,
        ci_high=high,
        verdict=verdict,
        sources=[
            Source(
                layer=neck.layer,
                metric=m["metric"],
                estimator=m["estimator"],
                section="skips",
            )
            for m in entry["metrics"]
        ],
    )


_HEADLINE = {
    "latent_factors": ("active_units", "factor"),
    "gaussian_latent": ("prior_kl", "prior", "gaussian", "kl"),
    "capacity": ("gap", "generalisation"),
}


def _from_section(ctx: Context, key: str, neck: Bottleneck, question: str) -> Answer:
    """An answer another family measured: the entry of section ``key`` whose
    ``layer`` is the neck, its rows (``metrics``) as sources, its headline the
    first row with a value whose metric holds the question's first word
    (``_HEADLINE``, in order). A row that names its own ``layer`` lives in that
    layer's rows (``capacity``: the gap on the output layer, the ID at the neck);
    any other lives in the section. A section that is a dict with ``necks``
    answers only at those necks (``capacity``: the narrowest); its ``reason``
    says why it holds none."""
    if key not in ctx.sections:
        return _na(question, f"{key} did not run")
    found = ctx.sections[key]
    entries = found if isinstance(found, list) else (found or {}).get("necks") or []
    entry = next(
        (e for e in entries if isinstance(e, dict) and e.get("layer") == neck.layer),
        None,
    )
    if entry is None:
        return _na(question, _no_entry(key, found, entries))
    rows = [m for m in entry.get("metrics") or [] if isinstance(m, dict)]
    words = _HEADLINE[question]
    matching = [m for w in words for m in rows if w in str(m.get("metric", ""))]
    head = next((m for m in matching if m.get("value") is not None), None)
    head = head or (matching[0] if matching else None)
    if head is None:
        return _na(question, entry.get("reason") or f"{key} has no row for it")
    return Answer(
        question=question,
        metric=head.get("metric"),
        estimator=head.get("estimator"),
        value=head.get("value"),
        ci_low=head.get("ci_low"),
        ci_high=head.get("ci_high"),
        verdict=entry.get("verdict") or "measured",
        reason=head.get("reason"),
        sources=[
            Source(
                layer=str(m.get("layer") or neck.layer),
                metric=str(m.get("metric")),
                estimator=str(m.get("estimator")),
                section=None if m.get("layer") else key,
            )
            for m in rows
        ],
    )


def _no_entry(key: str, found: Any, entries: list[Any]) -> str:
    if isinstance(found, dict) and found.get("reason"):
        return str(found["reason"])
    if isinstance(found, dict) and entries:
        at = ", ".join(str(e.get("layer")) for e in entries if isinstance(e, dict))
        return f"{key} answers at the narrowest neck, {at}"
    return f"{key} has no entry for this neck"
