"""The metric-family registry: one loop, fail small, lose nothing."""

from __future__ import annotations

import pytest
import torch

from analysis import analyse, build_model, load_dataset
from analysis.families import REGISTRY, Context, Family
from analysis.types import LayerInfo, MetricValue
from contract.families import FAMILIES, FamilySpec, Section

MLP = {"in_features": 64, "widths": [32, 8, 32], "out_features": 10}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("sklearn:digits")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", MLP)


def test_a_family_failing_on_one_layer_keeps_every_other_row(
    monkeypatch, digits
) -> None:
    family = REGISTRY["id"]
    original = family.layer_rows

    def flaky(ctx: Context, info: LayerInfo, acts: torch.Tensor) -> list:
        if info.name == "fc1":
            raise RuntimeError("boom")
        return original(ctx, info, acts)

    monkeypatch.setattr(family, "layer_rows", flaky)
    cfg = {"samples": 300, "metrics": ["id", "probe"], "id": {"methods": ["twonn"]}}
    result = analyse(_model(), digits, cfg, device="cpu")
    broken = result.layer("fc1")
    twonn = broken.metric("intrinsic_dimension", "twonn")
    assert twonn is not None and twonn.value is None and "boom" in twonn.reason
    assert broken.metric("probe_accuracy", "logistic_regression").value is not None
    others = [layer for layer in result.layers if layer.name != "fc1"]
    assert all(
        layer.metric("intrinsic_dimension", "twonn").value is not None
        for layer in others
    )
    assert result.warnings == ["id failed on fc1: RuntimeError: boom"]


def test_a_failing_section_family_keeps_the_layers(monkeypatch, digits) -> None:
    def broken(ctx: Context) -> None:
        raise MemoryError("no room")

    monkeypatch.setattr(REGISTRY["cka"], "section", broken)
    cfg = {"samples": 200, "metrics": ["id", "cka"], "id": {"methods": ["pca90"]}}
    result = analyse(_model(), digits, cfg, device="cpu")
    assert result.similarity["matrix"] is None
    assert "no room" in result.similarity["reason"]
    assert all(layer.metrics for layer in result.layers)
    assert result.warnings == ["cka failed: MemoryError: no room"]


def test_fatal_errors_end_the_run(monkeypatch, digits) -> None:
    class Stop(Exception):
        pass

    def stop(*args):
        raise Stop

    monkeypatch.setattr(REGISTRY["id"], "layer_rows", stop)
    with pytest.raises(Stop):
        analyse(_model(), digits, {"samples": 100}, device="cpu", fatal=(Stop,))


def test_the_stored_config_says_what_ran(digits) -> None:
    x = digits.x[:50]  # a tensor: no labels
    cfg = {"samples": 2000, "metrics": ["id", "mi", "probe"]}
    result = analyse(_model(), x, cfg, device="cpu")
    assert result.config.samples == 50 and result.config.metrics == ("id", "mi")
    assert result.warnings == [
        "samples: 2000 asked for, the dataset has 50; all 50 were analysed",
        "mi: the dataset has no labels; only the rows that need none were measured",
        "probe: not run, the dataset has no labels",
    ]
    assert result.to_dict()["warnings"] == result.warnings


def test_attribution_auto_target_on_an_autoencoder(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(
        "conv_autoencoder", {"image_size": 8, "channels": [4], "latent_dim": 2}
    )
    x = torch.rand(40, 1, 8, 8)
    cfg = {
        "samples": 40,
        "metrics": ["id", "attribution"],
        "id": {"methods": ["pca90"]},
        "attribution": {"maps": 2, "steps": 4},
    }
    result = analyse(model, x, cfg, device="cpu", artifacts_dir=tmp_path)
    assert result.warnings == []
    (entry,) = result.attribution
    assert entry["target"] == "reconstruction"


class _Width(Section):
    scale: float = 1.0


class _WidthFamily(Family):
    name = "width"

    def layer_rows(self, ctx, info, acts) -> list[MetricValue]:
        scale = ctx.section("width").scale
        return [MetricValue("width", "count", scale * acts.shape[1], n_samples=ctx.n)]

    def void_rows(self, ctx, reason) -> list[MetricValue]:
        return [MetricValue("width", "count", None, reason=reason)]


def test_a_new_family_needs_its_declaration_module_and_nothing_else(
    monkeypatch, digits
) -> None:
    spec = FamilySpec("width", _Width, "the stored width of every layer")
    monkeypatch.setitem(FAMILIES, "width", spec)
    monkeypatch.setitem(REGISTRY, "width", _WidthFamily())
    cfg = {"samples": 100, "metrics": ["width"], "width": {"scale": 2.0}}
    result = analyse(_model(), digits, cfg, device="cpu")
    fc1 = result.layer("fc1").metric("width", "count")
    assert fc1 is not None and fc1.value == 2.0 * 8
    assert result.to_dict()["config"]["width"] == {"scale": 2.0}


@pytest.mark.parametrize(
    ("target", "says"),
    [("label", "class indices 0..9"), (12, "not an output of a model with 10")],
)
def test_label_targets_that_index_no_output_fail_before_work(
    monkeypatch, digits, tmp_path, target, says
) -> None:
    import analysis.pipeline as pipeline
    from analysis.datasets import Dataset
    from analysis.errors import InvalidInputError

    def no_capture(*args, **kwargs):
        raise AssertionError("capture ran before the labels were checked")

    monkeypatch.setattr(pipeline, "capture", no_capture)
    y = digits.y.clone()
    y[:3] = torch.tensor([-1, 10, 11])
    bad = Dataset(digits.x, y, "bad", "bad", "0" * 64)
    cfg = {"metrics": ["attribution"], "attribution": {"target": target}}
    with pytest.raises(InvalidInputError, match=says):
        analyse(_model(), bad, cfg, device="cpu", artifacts_dir=tmp_path)
