"""End to end: the demo model through intake, capture, bottlenecks and ID."""

from __future__ import annotations

import json

import pytest
import torch

from analysis.architectures import build_model
from analysis.bottlenecks import find_bottlenecks
from analysis.capture import profile
from analysis.checkpoints import load_model
from analysis.datasets import load_dataset
from analysis.demo import train_demo_model
from analysis.errors import InvalidInputError, ShapeMismatchError
from analysis.pipeline import analyse, select_layers


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    trained = train_demo_model(tmp_path_factory.mktemp("demo"), epochs=30, seed=0)
    model, ckpt = load_model(trained.architecture, trained.config, trained.weights)
    result = analyse(
        model,
        load_dataset(trained.dataset),
        {"samples": 600, "seed": 0},
        device="cpu",
        model_info={"architecture": "mlp", "sha256": ckpt.sha256},
    )
    return trained, model, result


def test_demo_model_learns(demo) -> None:
    trained, _, _ = demo
    assert trained.test_accuracy > 0.85  # digits, 30 epochs, seed 0: ~0.95


def test_demo_bottleneck_found_and_its_id_is_finite_and_below_width(demo) -> None:
    _, _, result = demo
    assert len(result.bottlenecks) >= 1
    neck = min(result.bottlenecks, key=lambda b: b.width)
    assert neck.width == 8 and neck.kind == "dense"
    layer = result.layer(neck.layer)
    assert layer.is_bottleneck
    ids = {m.estimator: m for m in layer.metrics if m.metric == "intrinsic_dimension"}
    assert set(ids) == {"twonn", "mle", "pca90", "participation_ratio"}
    for m in ids.values():
        assert m.value is not None, m.reason
        assert 0 < m.value <= 8 + 1e-6, (m.estimator, m.value)
        assert m.ci_low is not None and m.ci_high is not None
        assert m.n_samples == 600


def test_result_json_has_the_documented_fields(demo) -> None:
    _, _, result = demo
    data = json.loads(result.to_json())
    assert data["model"]["architecture"] == "mlp"
    assert len(data["model"]["sha256"]) == 64
    assert data["dataset"]["spec"] == "sklearn:digits"
    assert len(data["dataset"]["sha256"]) == 64
    layer = data["layers"][0]
    assert set(layer) >= {
        "name",
        "index",
        "module",
        "shape",
        "width",
        "is_bottleneck",
        "projected_to",
        "metrics",
    }
    assert set(layer["metrics"][0]) >= {
        "metric",
        "estimator",
        "value",
        "ci_low",
        "ci_high",
        "n_samples",
        "params",
    }
    assert set(data["bottlenecks"][0]) == {
        "layer",
        "block",
        "width_in",
        "width",
        "width_out",
        "ratio",
        "kind",
        "skip_connection",
        "pattern",
    }
    prov = data["provenance"]
    for key in (
        "seed",
        "sample_indices_sha256",
        "projection_seeds",
        "versions",
        "device",
        "duration_s",
        "input_dtype",
        "model_dtype",
    ):
        assert key in prov
    assert prov["versions"]["torch"] == torch.__version__.split("+")[0] or prov[
        "versions"
    ]["torch"].startswith(torch.__version__.split("+")[0])


def test_same_seed_same_numbers(demo) -> None:
    _, model, first = demo
    again = analyse(
        model, load_dataset("sklearn:digits"), {"samples": 600, "seed": 0}, device="cpu"
    )
    a, b = first.to_dict(), again.to_dict()
    assert a["layers"] == b["layers"]
    assert (
        a["provenance"]["sample_indices_sha256"]
        == b["provenance"]["sample_indices_sha256"]
    )


def test_wide_layers_are_projected_and_recorded() -> None:
    torch.manual_seed(0)
    model = build_model(
        "mlp", {"in_features": 16, "widths": [256, 8, 256], "out_features": 4}
    )
    x = torch.randn(200, 16)
    result = analyse(
        model,
        x,
        {"samples": 200, "budget": 64, "layers": "all", "id": {"methods": ["twonn"]}},
        device="cpu",
    )
    wide = [layer for layer in result.layers if layer.width == 256]
    assert wide and all(layer.projected_to == 64 for layer in wide)
    assert set(result.provenance["projection_seeds"]) == {layer.name for layer in wide}
    narrow = [layer for layer in result.layers if layer.width <= 64]
    assert all(layer.projected_to is None for layer in narrow)


def test_layer_selection_auto_all_and_globs() -> None:
    model = build_model(
        "resnet",
        {
            "layers": [1, 1],
            "widths": [8, 16],
            "stem_width": 8,
            "num_classes": 3,
            "small_input": True,
        },
    )
    layers = profile(model, torch.randn(2, 3, 16, 16))
    necks = {b.layer for b in find_bottlenecks(layers, model=model)}
    auto = select_layers(model, layers, "auto", necks)
    assert necks <= set(auto)
    assert {"layer1.0", "layer2.0", "fc"} <= set(auto)
    assert not any(
        name.startswith("bn") or ".bn" in name for name in auto if name not in necks
    )
    assert not any("downsample" in name for name in auto)  # inside a block
    assert select_layers(model, layers, "all", necks) == [x.name for x in layers]
    assert select_layers(model, layers, "layer1.*.conv*", necks) == [
        "layer1.0.conv1",
        "layer1.0.conv2",
        "layer1.0.conv3",
    ]
    with pytest.raises(InvalidInputError, match="match no layer"):
        select_layers(model, layers, "layer9.*", necks)


def test_wrong_data_shape_fails_before_any_long_work() -> None:
    model = build_model("mlp", {"in_features": 10, "widths": [8], "out_features": 2})
    with pytest.raises(ShapeMismatchError):
        analyse(model, torch.randn(50, 12), {"samples": 50}, device="cpu")


def test_too_few_samples_for_mle_gives_a_reason_not_a_crash() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", {"in_features": 4, "widths": [8], "out_features": 2})
    result = analyse(
        model, torch.randn(12, 4), {"samples": 12, "layers": "all"}, device="cpu"
    )
    mle = result.layers[0].metric("intrinsic_dimension", "mle")
    assert mle is not None and mle.value is None and mle.reason


@pytest.mark.parametrize(
    ("id_params", "says"),
    [
        ({"mle": {"kk": 3}}, "kk"),
        ({"mle": {"k": 0}}, "k"),
        ({"twonn": {"discard_fraction": 2.0}}, "discard_fraction"),
    ],
)
def test_bad_estimator_parameters_fail_before_capture(
    monkeypatch, id_params, says
) -> None:
    import analysis.pipeline as pipeline

    def no_capture(*args, **kwargs):
        raise AssertionError("capture ran before the parameters were checked")

    monkeypatch.setattr(pipeline, "capture", no_capture)
    model = build_model("mlp", {"in_features": 4, "widths": [8], "out_features": 2})
    with pytest.raises(InvalidInputError, match=says):
        analyse(model, torch.randn(40, 4), {"id": {"params": id_params}}, device="cpu")


def test_a_layer_with_nan_outputs_gets_reasons_not_a_crash() -> None:
    model = build_model("mlp", {"in_features": 4, "widths": [8], "out_features": 2})
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    result = analyse(
        model,
        torch.randn(60, 4),
        {"layers": "head", "id": {"methods": ["twonn", "pca90"]}},
        device="cpu",
    )
    rows = result.layer("head").metrics
    assert all(m.value is None and "NaN" in (m.reason or "") for m in rows)
