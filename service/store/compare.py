"""Two succeeded analyses of one architecture, layer by layer."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import InvalidInput
from service.models import AnalysisRow, BottleneckRow, LayerRow, MetricRow
from service.schemas_series import ComparisonPublic, MetricChange
from service.store._common import _finished

Key = tuple[str, str, str, int]  # layer, metric, estimator, occurrence
Values = dict[Key, tuple[float | None, float | None, float | None]]


def _architecture(row: AnalysisRow) -> tuple[str | None, Any]:
    model = row.result_model or {}
    return model.get("architecture"), model.get("architecture_config")


def _layers(session: Session, analysis_id: str) -> list[str]:
    return list(
        session.scalars(
            select(LayerRow.name)
            .where(LayerRow.analysis_id == analysis_id)
            .order_by(LayerRow.position)
        )
    )


def _values(session: Session, analysis_id: str) -> Values:
    values: Values = {}
    for name, metric, estimator, value, low, high in session.execute(
        select(
            LayerRow.name,
            MetricRow.metric,
            MetricRow.estimator,
            MetricRow.value,
            MetricRow.ci_low,
            MetricRow.ci_high,
        )
        .join(LayerRow, LayerRow.id == MetricRow.layer_id)
        .where(MetricRow.analysis_id == analysis_id)
        .order_by(LayerRow.position, MetricRow.position)
    ):
        occurrence = sum(1 for k in values if k[:3] == (name, metric, estimator))
        values[(name, metric, estimator, occurrence)] = (value, low, high)
    return values


def _bottlenecks(session: Session, analysis_id: str) -> set[str]:
    return set(
        session.scalars(
            select(BottleneckRow.layer).where(BottleneckRow.analysis_id == analysis_id)
        )
    )


def _mismatch(a: AnalysisRow, b: AnalysisRow, la: list[str], lb: list[str]) -> None:
    problems = []
    if _architecture(a) != _architecture(b):
        problems.append(
            f"architecture: a is {_architecture(a)[0]!r} with config "
            f"{_architecture(a)[1]}, b is {_architecture(b)[0]!r} with config "
            f"{_architecture(b)[1]}"
        )
    only_a = [n for n in la if n not in set(lb)]
    only_b = [n for n in lb if n not in set(la)]
    if only_a:
        problems.append(f"layers only in a: {', '.join(only_a)}")
    if only_b:
        problems.append(f"layers only in b: {', '.join(only_b)}")
    if problems:
        raise InvalidInput(
            "the two analyses cannot be compared layer by layer: "
            + "; ".join(problems),
            code="not_comparable",
            problems=problems,
        )


def _change(
    key: Key,
    a: tuple[float | None, float | None, float | None],
    b: tuple[float | None, float | None, float | None],
) -> MetricChange:
    (va, la, ha), (vb, lb, hb) = a, b
    difference = vb - va if va is not None and vb is not None else None
    relative = difference / abs(va) if difference is not None and va else None
    overlap = None
    if None not in (la, ha, lb, hb):
        overlap = la <= hb and lb <= ha  # type: ignore[operator]
    return MetricChange(
        layer=key[0],
        metric=key[1],
        estimator=key[2],
        occurrence=key[3],
        a=va,
        b=vb,
        difference=difference,
        relative_change=relative,
        intervals_overlap=overlap,
    )


def compare_analyses(
    session: Session, team_id: str, a_id: str, b_id: str
) -> ComparisonPublic:
    """Per layer and (metric, estimator) present in both: a, b, b - a, the change
    relative to |a|, and whether the intervals overlap; bottlenecks of b only
    (added) and of a only (lost). Both analyses must be the caller's team's and
    succeeded (NotFound, Conflict); different architectures or layer sets are
    InvalidInput naming what does not match."""
    a, b = _finished(session, team_id, a_id), _finished(session, team_id, b_id)
    layers_a, layers_b = _layers(session, a.id), _layers(session, b.id)
    _mismatch(a, b, layers_a, layers_b)
    values_a, values_b = _values(session, a.id), _values(session, b.id)
    rows = [_change(k, v, values_b[k]) for k, v in values_a.items() if k in values_b]
    necks_a, necks_b = _bottlenecks(session, a.id), _bottlenecks(session, b.id)
    return ComparisonPublic(
        a=a.id,
        b=b.id,
        architecture=str(_architecture(a)[0]),
        rows=rows,
        bottlenecks_added=[n for n in layers_b if n in necks_b - necks_a],
        bottlenecks_lost=[n for n in layers_a if n in necks_a - necks_b],
    )
