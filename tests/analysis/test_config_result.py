"""The frozen config and the result's JSON form."""

from __future__ import annotations

import json

import pytest

from analysis.config import parse_config
from analysis.errors import InvalidInputError
from analysis.result import SCHEMA_VERSION, AnalysisResult, LayerResult
from analysis.types import Bottleneck, MetricValue


def test_config_round_trips_and_is_frozen() -> None:
    cfg = parse_config(
        {
            "samples": 500,
            "id": {"methods": ["twonn", "mle"], "params": {"mle": {"k": 10}}},
        }
    )
    assert cfg.section("id").methods == ("twonn", "mle")
    assert parse_config(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="frozen"):
        cfg.samples = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"sampels": 10}, "sampels: unknown key"),
        ({"id": {"methods": ["twonn", "nope"]}}, "unknown estimator 'nope'"),
        ({"samples": 1}, "samples: Input should be greater than or equal to 3"),
        ({"budget": 0}, "budget"),
        ({"bottleneck_factor": 1.0}, "bottleneck_factor"),
        ({"version": 99}, "version 99"),
        ({"samples": "ten"}, "samples: Input should be a valid integer"),
        ({"seed": True}, "seed: Input should be a valid integer"),
        ({"id": {"params": {"mle": 3}}}, "id.params.mle"),
        ({"metrics": ["id", "astrology"]}, "astrology"),
        ({"id_methods": ["twonn"]}, "id_methods: this key is now id.methods"),
    ],
)
def test_config_rejects_bad_values_by_name(data: dict, says: str) -> None:
    with pytest.raises(InvalidInputError, match=says):
        parse_config(data)


def test_config_lists_every_problem_at_once() -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_config({"samples": 1, "foo": 1, "metrics": ["entropy"], "budget": 0})
    problems = info.value.problems
    assert len(problems) == 4, problems
    for word in ("samples", "foo", "entropy", "budget"):
        assert any(word in p for p in problems), (word, problems)


def test_version_1_config_is_read_with_the_same_meaning() -> None:
    old = {
        "version": 1,
        "metrics": ["id", "mi", "attribution"],
        "id_methods": ["twonn"],
        "mi_max_dim": 8,
        "mi_params": {"ksg": {"k": 5}},
        "probe_cv": 3,
        "attribution_target": None,
    }
    cfg = parse_config(old)
    assert cfg.section("id").methods == ("twonn",)
    assert cfg.section("mi").params == {"ksg": {"k": 5, "max_dim": 8}}
    assert cfg.section("probe").cv == 3
    assert cfg.section("attribution").target == "predicted"


def test_metric_value_turns_non_finite_into_none_with_reason() -> None:
    m = MetricValue("intrinsic_dimension", "twonn", float("nan"), 1.0, float("inf"))
    assert m.value is None and m.ci_high is None and m.ci_low == 1.0
    assert "value" in (m.reason or "") and "ci_high" in (m.reason or "")


def _result() -> AnalysisResult:
    layer = LayerResult(
        name="fc1",
        index=3,
        module="Linear",
        shape=[8],
        width=8,
        is_bottleneck=True,
        projected_to=None,
        metrics=[
            MetricValue(
                "intrinsic_dimension",
                "twonn",
                3.2,
                3.0,
                3.5,
                100,
                {"discard_fraction": 0.1},
            ),
            MetricValue("intrinsic_dimension", "mle", float("nan"), reason="x"),
        ],
    )
    neck = Bottleneck("fc1", "", 64, 8, 64, 8.0, "dense", False)
    return AnalysisResult(
        model={"architecture": "mlp"},
        dataset={"spec": "sklearn:digits"},
        config=parse_config({}),
        layers=[layer],
        bottlenecks=[neck],
        provenance={"seed": 0, "duration_s": float("inf")},
    )


def test_result_json_round_trip_and_no_nan(tmp_path) -> None:
    result = _result()
    text = result.to_json()
    data = json.loads(text)  # strict JSON: NaN/Infinity would still parse, so check
    assert "NaN" not in text and "Infinity" not in text
    assert data["schema_version"] == SCHEMA_VERSION
    assert set(data) == {
        "schema_version",
        "model",
        "dataset",
        "config",
        "layers",
        "bottlenecks",
        "provenance",
        "warnings",
    }
    assert data["layers"][0]["metrics"][1] == {
        "metric": "intrinsic_dimension",
        "estimator": "mle",
        "value": None,
        "ci_low": None,
        "ci_high": None,
        "n_samples": 0,
        "params": {},
        "reason": "x",
        "flags": [],
    }
    assert data["provenance"]["duration_s"] is None
    again = AnalysisResult.from_json(text)
    assert again.layer("fc1").metric("intrinsic_dimension", "twonn").value == 3.2
    assert again.bottlenecks == result.bottlenecks
    path = tmp_path / "r.json"
    result.save(path)
    assert json.loads(path.read_text()) == data
    assert list(tmp_path.iterdir()) == [path]


def test_result_of_schema_version_1_is_read() -> None:
    data = _result().to_dict()
    data["schema_version"] = 1
    del data["warnings"]
    data["config"] = {"version": 1, "id_methods": ["mle"]}
    again = AnalysisResult.from_dict(data)
    assert again.config.section("id").methods == ("mle",)
    assert again.warnings == []


def test_result_from_other_schema_version_is_refused() -> None:
    data = _result().to_dict()
    data["schema_version"] = 0
    with pytest.raises(ValueError, match="schema_version"):
        AnalysisResult.from_dict(data)
