"""The necks section: each answer follows from the rows it names."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console

from analysis import analyse, build_model, load_dataset
from analysis.families.necks import _change, _kept
from analysis.report import necks_table, result_tables
from contract.necks import QUESTIONS, NecksResult
from contract.result import LayerRecord, MetricRow

RESNET = {
    "layers": [2, 1],
    "widths": [8, 16],
    "stem_width": 8,
    "small_input": True,
    "in_channels": 1,
    "num_classes": 10,
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("sklearn:digits")


def _layer(name: str, value: float, low: float, high: float) -> LayerRecord:
    row = MetricRow("intrinsic_dimension", "twonn", value, low, high, n_samples=100)
    return LayerRecord(
        name=name,
        index=0,
        module="Linear",
        shape=[8],
        width=8,
        is_bottleneck=False,
        metrics=[row],
    )


@pytest.mark.parametrize(
    ("a", "b", "interval", "verdict"),
    [
        ((10.0, 9.0, 11.0), (4.0, 3.5, 4.5), (-7.5, -4.5), "compresses"),
        ((4.0, 3.5, 4.5), (10.0, 9.0, 11.0), (4.5, 7.5), "expands"),
        ((5.0, 4.0, 6.0), (4.5, 4.2, 4.8), (-1.8, 0.8), "unclear"),
    ],
)
def test_a_change_takes_the_conservative_interval(a, b, interval, verdict) -> None:
    answer = _change(
        _layer("in", *a), _layer("neck", *b), "intrinsic_dimension", "twonn", "q"
    )
    assert answer.value == pytest.approx(b[0] - a[0])
    assert (answer.ci_low, answer.ci_high) == pytest.approx(interval)
    assert answer.verdict == verdict
    assert [(s.layer, s.metric, s.estimator) for s in answer.sources] == [
        ("in", "intrinsic_dimension", "twonn"),
        ("neck", "intrinsic_dimension", "twonn"),
    ]


def test_a_fraction_kept_divides_the_interval_ends() -> None:
    entering, neck = _layer("in", 2.0, 1.6, 2.5), _layer("neck", 1.0, 0.8, 1.2)
    answer = _kept(entering, neck, "intrinsic_dimension", "twonn")
    assert answer.value == pytest.approx(0.5)
    assert (answer.ci_low, answer.ci_high) == pytest.approx((0.8 / 2.5, 1.2 / 1.6))
    assert answer.verdict == "reduced"
    held = _kept(
        entering, _layer("neck", 1.9, 1.5, 2.4), "intrinsic_dimension", "twonn"
    )
    assert held.verdict == "kept"


def test_a_two_wide_neck_compresses_digits(digits) -> None:
    """An untrained MLP 64 -> 64 -> 2 -> 64 -> 10 on 400 digits (seed 0): pca90
    is at most 2 at the neck and about 19 entering it, so the answer must be
    ``compresses`` with an interval far from 0; sources name existing rows."""
    torch.manual_seed(0)
    net = build_model(
        "mlp", {"in_features": 64, "widths": [64, 2, 64], "out_features": 10}
    )
    cfg = {
        "samples": 400,
        "metrics": ["necks", "id", "probe"],
        "id": {"methods": ["pca90", "twonn"]},
    }
    result = analyse(net, digits, cfg, device="cpu")
    section = NecksResult.model_validate(result.sections["necks"])
    (neck,) = section.necks
    assert (neck.layer, neck.entering, neck.leaving) == ("fc1", "act0", "fc2")
    assert list(neck.answers) == list(QUESTIONS)
    head = neck.answers["compresses"]
    assert (head.estimator, head.step, head.verdict) == (
        "pca90",
        "act0->fc1",
        "compresses",
    )
    assert head.ci_high < -10
    assert neck.answers["keeps_task"].metric == "probe_accuracy"
    assert neck.answers["skip_carries_input"].reason == (
        "no skip connection around this neck"
    )
    assert neck.answers["receptive_field"].reason == "receptive_field did not run"
    rows = {
        (layer.name, m.metric, m.estimator): m
        for layer in result.layers
        for m in layer.metrics
    }
    for answer in [*neck.compression, *neck.task]:
        assert answer.sources and all(
            (s.layer, s.metric, s.estimator) in rows for s in answer.sources
        )
        if answer.ci_low is not None:
            assert answer.ci_low <= answer.value <= answer.ci_high
            expected = (
                "unclear" if answer.ci_low <= 0 <= answer.ci_high else answer.verdict
            )
            assert answer.verdict == expected


def test_necks_runs_after_the_sections_it_reads_whatever_the_order() -> None:
    torch.manual_seed(0)
    net = build_model("resnet", RESNET)
    x = torch.randn(32, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    cfg = {
        "samples": 32,
        "metrics": ["necks", "skips", "receptive_field"],
        "receptive_field": {"samples": 4, "resamples": 20},
    }
    result = analyse(net, x, cfg, device="cpu")
    assert list(result.sections)[-1] == "necks"
    necks = {n["layer"]: n for n in result.sections["necks"]["necks"]}
    skips = {e["layer"]: e for e in result.sections["skips"]}
    for layer, neck in necks.items():
        skip = neck["answers"]["skip_carries_input"]
        share = skips[layer]["metrics"][0]
        assert skip["value"] == share["value"]
        assert skip["verdict"] in ("identity", "branch", "unclear")
        assert {s["section"] for s in skip["sources"]} == {"skips"}
        field = neck["answers"]["receptive_field"]
        assert field["metric"] == "receptive_field_radius"
        assert field["verdict"] in ("widens", "narrows", "unclear")
    lines = Console(width=250, record=True)
    for shown in result_tables(result.to_dict()):
        lines.print(shown)
    text = lines.export_text()
    assert "what each bottleneck does" in text and "layer1.1.conv2" in text


def test_no_table_without_the_section() -> None:
    assert necks_table({"layers": [], "bottlenecks": []}) is None


def test_answers_of_other_families_link_their_rows() -> None:
    """A ``latent`` section entry at the neck: the prior KL and the active units
    are the headlines, every row of the entry a source; no capacity section."""
    from types import SimpleNamespace

    from analysis.families.necks import _from_section

    rows = [
        {"metric": "latent_kl", "estimator": "mean", "value": 3.0},
        {"metric": "latent_active_units", "estimator": "burda", "value": 2.0},
        {"metric": "latent_prior_kl", "estimator": "moment", "value": 0.1},
    ]
    ctx = SimpleNamespace(sections={"latent": [{"layer": "z", "metrics": rows}]})
    neck = SimpleNamespace(layer="z")
    prior = _from_section(ctx, "latent", neck, "gaussian_latent")
    assert (prior.metric, prior.value, prior.verdict) == (
        "latent_prior_kl",
        0.1,
        "measured",
    )
    assert [s.metric for s in prior.sources] == [r["metric"] for r in rows]
    units = _from_section(ctx, "latent", neck, "latent_factors")
    assert units.metric == "latent_active_units"
    other = _from_section(ctx, "latent", SimpleNamespace(layer="y"), "latent_factors")
    assert other.reason == "latent has no entry for this neck"
    assert _from_section(ctx, "capacity", neck, "capacity").reason == (
        "capacity did not run"
    )


def test_capacity_answers_at_the_narrowest_neck_with_the_rows_it_read() -> None:
    """A capacity section as the family writes it: the headline is the first gap
    row with a value (accuracy is null here: the loss), the sources name the
    output layer's gap rows and the neck's ID row where they live; another neck
    gets the reason; a failed section passes its reason on."""
    from types import SimpleNamespace

    from analysis.families.necks import _from_section

    rows = [
        {
            "metric": "generalisation_gap",
            "estimator": "accuracy",
            "value": None,
            "reason": "accuracy needs class labels; the target is the input",
            "layer": "dec",
        },
        {
            "metric": "generalisation_gap",
            "estimator": "loss",
            "value": 0.25,
            "ci_low": 0.2,
            "ci_high": 0.3,
            "layer": "dec",
        },
        {
            "metric": "intrinsic_dimension",
            "estimator": "twonn",
            "value": 1.9,
            "layer": "z",
        },
    ]
    section = {"necks": [{"layer": "z", "width": 2, "metrics": rows}], "reason": None}
    ctx = SimpleNamespace(sections={"capacity": section})
    answer = _from_section(ctx, "capacity", SimpleNamespace(layer="z"), "capacity")
    assert (answer.metric, answer.estimator, answer.value) == (
        "generalisation_gap",
        "loss",
        0.25,
    )
    assert (answer.ci_low, answer.ci_high, answer.verdict) == (0.2, 0.3, "measured")
    assert [(s.layer, s.metric, s.section) for s in answer.sources] == [
        ("dec", "generalisation_gap", None),
        ("dec", "generalisation_gap", None),
        ("z", "intrinsic_dimension", None),
    ]
    wider = _from_section(ctx, "capacity", SimpleNamespace(layer="y"), "capacity")
    assert wider.verdict == "not applicable"
    assert wider.reason == "capacity answers at the narrowest neck, z"
    failed = SimpleNamespace(sections={"capacity": {"necks": [], "reason": "boom"}})
    assert (
        _from_section(failed, "capacity", SimpleNamespace(layer="z"), "capacity").reason
        == "boom"
    )
