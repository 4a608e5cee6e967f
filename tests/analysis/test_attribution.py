"""Attribution at the bottlenecks: our wrappers against Captum, and their guarantees.

Oracles: Captum's own classes called directly on the same model (``allclose`` with
the default rtol 1e-5, atol 1e-6 unless stated); the completeness axiom of
integrated gradients; known importance vectors for the unit summary. Seeds fixed.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import (
    IntegratedGradients,
    LayerAttribution,
    LayerConductance,
    LayerGradCam,
    LayerIntegratedGradients,
)
from torch import nn

from analysis._attr_batching import plan_batches
from analysis._attr_files import safe_name
from analysis._attr_methods import _unit_attribution
from analysis._attr_sanity import layers_above, spearman
from analysis.architectures import build_model
from analysis.attribution import (
    attribute_bottlenecks,
    gradcam_maps,
    input_ig_maps,
    sanity_check,
    unit_attribution,
    unit_summary,
)
from analysis.bottlenecks import find_bottlenecks
from analysis.capture import profile
from analysis.checkpoints import load_model
from analysis.datasets import load_dataset
from analysis.demo import train_demo_model
from analysis.errors import InvalidInputError
from analysis.types import Bottleneck

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def _small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 6, 3, padding=1),
            act1=nn.ReLU(),
            conv2=nn.Conv2d(6, 3, 3, padding=1, stride=2),
            act2=nn.ReLU(),
            flatten=nn.Flatten(),
            fc=nn.Linear(3 * 4 * 4, 4),
        )
    ).eval()


def _tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    cfg = {
        "layers": [1, 1],
        "widths": [4, 8],
        "stem_width": 8,
        "small_input": True,
        "num_classes": 3,
    }
    return build_model("resnet", cfg).eval()


def _hooks_left(model: nn.Module) -> int:
    left = sum(len(getattr(m, d)) for m in model.modules() for d in _HOOK_DICTS)
    globals_ = nn.modules.module
    return (
        left
        + len(globals_._global_forward_hooks)
        + len(globals_._global_forward_pre_hooks)
    )


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # type: ignore[no-untyped-def]
    """Tiny models: two threads on a shared 2-core machine ran 6x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained_demo(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    demo = train_demo_model(tmp_path_factory.mktemp("demo"), epochs=8, seed=0)
    assert demo.test_accuracy > 0.8
    model, _ = load_model(demo.architecture, demo.config, demo.weights)
    return model


# --- our wrappers equal Captum's direct calls -------------------------------------


def test_layer_methods_equal_captum() -> None:
    model, x = _small_cnn(), torch.randn(6, 1, 8, 8)
    for method, cls in (
        ("conductance", LayerConductance),
        ("integrated_gradients", LayerIntegratedGradients),
    ):
        ours = unit_attribution(model, "conv2", x, method=method, target=2, n_steps=8)
        theirs = cls(model, model.conv2).attribute(x, target=2, n_steps=8)
        assert ours.shape == (6, 3, 4, 4)
        assert torch.allclose(ours, theirs, atol=1e-6)
        # an explicit internal batch (the floor for each method) is passed through
        ibs = 12 if method == "conductance" else 6
        ours = unit_attribution(
            model,
            "conv2",
            x,
            method=method,
            target=2,
            n_steps=8,
            internal_batch_size=ibs,
        )
        theirs = cls(model, model.conv2).attribute(
            x, target=2, n_steps=8, internal_batch_size=ibs
        )
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_gradcam_and_input_ig_equal_captum() -> None:
    model, x = _small_cnn(), torch.randn(5, 1, 8, 8)
    ours = gradcam_maps(model, "conv2", x, target=1)
    cam = LayerGradCam(model, model.conv2).attribute(
        x, target=1, relu_attributions=True
    )
    theirs = LayerAttribution.interpolate(cam, (8, 8), interpolate_mode="bilinear")
    assert ours.shape == (5, 1, 8, 8)
    assert torch.allclose(ours, theirs, atol=1e-6)

    maps, delta = input_ig_maps(model, x, target=1, n_steps=16)
    ref_maps, ref_delta = IntegratedGradients(model).attribute(
        x, target=1, n_steps=16, return_convergence_delta=True
    )
    assert torch.allclose(maps, ref_maps, atol=1e-6)
    assert torch.allclose(delta, ref_delta, atol=1e-6)


def test_baseline_is_passed_to_captum() -> None:
    model, x = _small_cnn(), torch.randn(4, 1, 8, 8)
    base = torch.full((4, 1, 8, 8), 0.3)
    ours = unit_attribution(model, "conv1", x, target=0, n_steps=8, baseline=base)
    theirs = LayerConductance(model, model.conv1).attribute(
        x, baselines=base, target=0, n_steps=8
    )
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export internals
def test_export_program_with_a_dynamic_batch_works() -> None:
    """FACTS.md: a fixed-batch export breaks the layer methods (they batch the
    steps); with a dynamic batch dimension the unflattened program attributes
    like the eager model."""
    model, x = _small_cnn(), torch.randn(4, 1, 8, 8)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (x,), dynamic_shapes={"input": {0: batch}})
    exported = torch.export.unflatten(program)
    ours = unit_attribution(exported, "conv2", x, target=1, n_steps=8)
    theirs = LayerConductance(model, model.conv2).attribute(x, target=1, n_steps=8)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert _hooks_left(exported) == 0


# --- targets ------------------------------------------------------------------------


def test_target_none_is_the_argmax_class() -> None:
    model, x = _small_cnn(), torch.randn(6, 1, 8, 8)
    classes = model(x).argmax(1)
    ours = unit_attribution(model, "conv2", x, target=None, n_steps=8)
    theirs = LayerConductance(model, model.conv2).attribute(
        x, target=classes, n_steps=8
    )
    assert torch.allclose(ours, theirs, atol=1e-6)
    given = unit_attribution(model, "conv2", x, target=classes, n_steps=8)
    assert torch.allclose(given, theirs, atol=1e-6)


def test_target_reconstruction_on_a_conv_autoencoder() -> None:
    torch.manual_seed(0)
    ae = build_model("conv_autoencoder", {"image_size": 8, "channels": [4, 8]}).eval()
    x = torch.rand(4, 1, 8, 8)

    def error(z: torch.Tensor) -> torch.Tensor:
        return (ae(z) - z).pow(2).flatten(1).sum(1)  # (N,)

    for method, cls in (
        ("conductance", LayerConductance),
        ("integrated_gradients", LayerIntegratedGradients),
    ):
        ours = unit_attribution(
            ae, "to_latent.fc", x, method=method, target="reconstruction", n_steps=8
        )
        theirs = cls(error, ae.to_latent.fc).attribute(x, n_steps=8)
        assert ours.shape == (4, 8)
        assert torch.allclose(ours, theirs, atol=1e-5)
    rec = unit_attribution(ae, "to_latent.fc", x, target="reconstruction", n_steps=8)
    auto = unit_attribution(ae, "to_latent.fc", x, target="auto", n_steps=8)
    assert torch.equal(auto, rec)  # the output has the input's shape
    with pytest.raises(InvalidInputError, match="reconstruction"):
        unit_attribution(ae, "to_latent.fc", x, target=None)


def test_bad_targets_and_layers_are_refused() -> None:
    model, x = _small_cnn(), torch.randn(3, 1, 8, 8)
    with pytest.raises(InvalidInputError, match="outside"):
        unit_attribution(model, "conv2", x, target=9)
    with pytest.raises(InvalidInputError, match="target must be"):
        unit_attribution(model, "conv2", x, target="loss")
    with pytest.raises(InvalidInputError, match="reconstruction"):
        unit_attribution(model, "conv2", x, target="reconstruction")
    with pytest.raises(InvalidInputError, match="no module"):
        unit_attribution(model, "conv9", x)
    with pytest.raises(InvalidInputError, match="method"):
        unit_attribution(model, "conv2", x, method="deeplift")
    with pytest.raises(InvalidInputError, match="convolutional"):
        gradcam_maps(model, "fc", x)


# --- completeness ---------------------------------------------------------------


def test_integrated_gradients_completeness_on_an_mlp() -> None:
    """|delta| / |F(x) - F(0)| < 1e-2 per sample at 64 Gauss-Legendre steps."""
    torch.manual_seed(0)
    mlp = build_model(
        "mlp",
        {
            "in_features": 10,
            "widths": [32, 4, 32],
            "out_features": 3,
            "activation": "tanh",
        },
    ).eval()
    x = torch.randn(16, 10)
    maps, delta = input_ig_maps(mlp, x, target=1, n_steps=64)
    gap = (mlp(x)[:, 1] - mlp(torch.zeros_like(x))[:, 1]).detach()  # (N,)
    assert (delta.abs() < 1e-2 * gap.abs().clamp_min(1e-3)).all()
    assert torch.allclose(maps.sum(1), gap, atol=1e-3)
    # conductance at the bottleneck sums to the same gap, less tightly: it
    # weighs gradients by finite differences of the layer between path points
    cond = unit_attribution(mlp, "fc1", x, target=1, n_steps=64)
    assert torch.allclose(cond.sum(1), gap, atol=3e-2 * gap.abs().max().item())


# --- sanity check ---------------------------------------------------------------


def test_sanity_check_decorrelates_after_randomising_a_trained_top(
    trained_demo: nn.Module,
) -> None:
    """Demo MLP (64-128-64-8-64-10, 8 epochs), bottleneck fc2, 64 digits, seed 0:
    every method's mean Spearman rho after re-initialising fc3 and head is < 0.5
    (measured: conductance 0.08, layer IG 0.08, input IG 0.13; test accuracy
    0.875)."""
    x = load_dataset("sklearn:digits").x.flatten(1)[:64]
    before = copy.deepcopy(trained_demo.state_dict())
    rho = sanity_check(trained_demo, "fc2", x, seed=0, n_steps=16)
    assert set(rho) == {"conductance", "integrated_gradients", "input_ig"}
    assert all(abs(v) < 0.5 for v in rho.values()), rho
    # the model itself is untouched; the same maps correlate perfectly with themselves
    after = trained_demo.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert spearman(x, x) == pytest.approx(1.0)


def test_spearman_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (4, 30), generator=gen).float()  # many ties
    b = a + torch.randint(0, 3, (4, 30), generator=gen).float()
    expected = np.mean(
        [stats.spearmanr(a[i].numpy(), b[i].numpy()).statistic for i in range(4)]
    )
    assert spearman(a, b) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(spearman(torch.ones(2, 5), torch.randn(2, 5)))


def test_sanity_randomises_only_the_layers_above() -> None:
    model, x = _small_cnn(), torch.randn(4, 1, 8, 8)
    assert layers_above(model, "conv2", x) == ["fc"]
    assert layers_above(model, "conv1", x) == ["conv2", "fc"]
    rho = sanity_check(model, "conv2", x, target=0, n_steps=8)
    assert set(rho) == {"conductance", "integrated_gradients", "gradcam", "input_ig"}


# --- hooks, modes, in-place modules -------------------------------------------------


class _Boom(nn.Module):
    """Raises on a batch larger than one: the probes pass, captum's passes fail."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > 1:
            raise RuntimeError("boom")
        return x


def test_no_hook_left_and_state_restored_after_success_and_failure() -> None:
    model, x = _small_cnn(), torch.randn(4, 1, 8, 8)
    model.train()
    model.conv1.weight.requires_grad_(False)  # a frozen layer stays frozen
    flags = [p.requires_grad for p in model.parameters()]
    unit_attribution(model, "conv2", x, target=0, n_steps=4)
    gradcam_maps(model, "conv2", x, target=0)
    input_ig_maps(model, x, target=0, n_steps=4)
    assert _hooks_left(model) == 0
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags

    model.add_module("boom", _Boom())
    calls = [
        lambda: unit_attribution(model, "conv2", x, target=0, n_steps=4),
        lambda: unit_attribution(
            model, "conv2", x, method="integrated_gradients", target=0, n_steps=4
        ),
        lambda: gradcam_maps(model, "conv2", x, target=0),
        lambda: input_ig_maps(model, x, target=0, n_steps=4),
        lambda: sanity_check(model, "conv2", x, target=0, n_steps=4),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="boom"):
            call()
        assert _hooks_left(model) == 0
        assert model.training
        assert [p.requires_grad for p in model.parameters()] == flags
        assert type(model.conv2) is nn.Conv2d  # the output-cloning wrapper is gone


def test_inplace_relu_resnet_works_and_flags_are_restored() -> None:
    model, x = _tiny_resnet(), torch.randn(3, 3, 8, 8)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(m.inplace for m in relus)
    # plain captum: LayerIG on bn3 breaks on the in-place `out += identity`
    with pytest.raises(RuntimeError, match="in-place"):
        LayerIntegratedGradients(model, model.layer1[0].bn3).attribute(
            x, target=0, n_steps=4
        )
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    for layer in ("layer1.0.conv2", "layer1.0.bn2", "layer1.0.bn3"):
        for method in ("conductance", "integrated_gradients"):
            ours = unit_attribution(model, layer, x, method=method, target=0, n_steps=4)
            assert torch.isfinite(ours).all()
        assert gradcam_maps(model, layer, x, target=0).shape == (3, 1, 8, 8)
    # where captum can run (bn2 once ReLUs are not in place) we agree with it
    ours = unit_attribution(
        model, "layer1.0.bn2", x, method="integrated_gradients", target=0, n_steps=4
    )
    theirs = LayerIntegratedGradients(reference, reference.layer1[0].bn2).attribute(
        x, target=0, n_steps=4
    )
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert all(m.inplace for m in relus)
    assert _hooks_left(model) == 0


def test_reused_module_and_call_names_are_refused() -> None:
    model, x = _tiny_resnet(), torch.randn(2, 3, 8, 8)
    with pytest.raises(InvalidInputError, match="called 3 times"):
        unit_attribution(model, "layer1.0.relu", x, target=0)
    with pytest.raises(InvalidInputError, match="not one of its calls"):
        unit_attribution(model, "layer1.0.relu#2", x, target=0)


# --- memory: budget and CUDA OOM halving ---------------------------------------------


def test_plan_fits_the_budget() -> None:
    # conductance-like (points overlap): 33 points, 10 samples, 1000 bytes a row
    big = plan_batches(10, 33, row=1000, budget=10**9, overlap=True)
    assert (big.chunk, big.steps) == (10, 33)  # everything in one pass
    # 100 rows hold 3 whole paths: no point computed twice (10 x 10 would repeat 3)
    mid = plan_batches(10, 33, row=1000, budget=100_000, overlap=True)
    assert (mid.chunk, mid.steps) == (3, 33)
    capped = plan_batches(10, 33, row=1000, budget=10**9, overlap=True, max_rows=70)
    assert (capped.chunk, capped.steps) == (2, 33)
    ig = plan_batches(10, 32, row=1000, budget=10**9, max_rows=64)
    assert (ig.chunk, ig.steps) == (10, 6)  # integrated gradients repeat no point
    # 5 rows < 10 samples x 4 points: fewer samples, 4 points each
    low = plan_batches(10, 33, row=1000, budget=5_000, overlap=True)
    assert (low.chunk, low.steps) == (1, 4)
    tiny = plan_batches(10, 33, row=1000, budget=1, overlap=True)
    assert (tiny.chunk, tiny.steps) == (1, 2)  # the floor: 2 points, 1 sample
    # integrated gradients: any number of points per pass
    assert (plan_batches(10, 32, row=1000, budget=5_000).chunk) == 5
    assert plan_batches(10, 32, row=1000, budget=1).internal_batch_size == 1
    asked = plan_batches(10, 32, row=1000, budget=1, internal_batch_size=40)
    assert (asked.chunk, asked.steps) == (10, 4)
    asked = plan_batches(10, 33, 1000, 1, internal_batch_size=20, overlap=True)
    assert (asked.chunk, asked.steps) == (10, 2)  # as captum would


class _FakeOOM(nn.Module):
    """Identity that raises CUDA OOM when a pass holds more than ``limit`` rows."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return x


def test_cuda_oom_halves_the_internal_batch_and_retries() -> None:
    model, x = _small_cnn(), torch.randn(8, 1, 8, 8)
    reference = LayerConductance(model, model.conv2).attribute(x, target=1, n_steps=15)
    guard = _FakeOOM(limit=40)
    model.add_module("guard", guard)  # runs last: after the layer, inside captum
    attr, plan, _ = _unit_attribution(
        model,
        "conv2",
        x,
        method="conductance",
        target=1,
        n_steps=15,
        internal_batch_size=None,
        baseline=None,
        memory_budget_bytes=2**30,
    )
    # 16 path points x 8 samples = 128 rows -> 64 -> 32 fits
    assert plan.internal_batch_size == 32 and plan.oom_retries == 2
    assert max(guard.seen) == 128
    assert torch.allclose(attr, reference, atol=1e-5)
    assert _hooks_left(model) == 0

    guard.limit = 1  # conductance needs 2 rows for one sample: nothing fits
    with pytest.raises(torch.cuda.OutOfMemoryError):
        unit_attribution(model, "conv2", x, target=1, n_steps=15)
    assert _hooks_left(model) == 0


def test_oom_then_fewer_samples_per_call_for_gradcam() -> None:
    model, x = _small_cnn(), torch.randn(8, 1, 8, 8)
    reference = gradcam_maps(model, "conv2", x, target=1)
    model.add_module("guard", _FakeOOM(limit=3))
    assert torch.allclose(gradcam_maps(model, "conv2", x, target=1), reference)


# --- unit summary ------------------------------------------------------------------


def test_unit_summary_known_answers() -> None:
    one = torch.zeros(5, 20)
    one[:, 3] = torch.randn(5).abs() + 1  # one unit carries everything
    s = unit_summary(one, method="conductance", params={"n_steps": 8})
    assert s["effective_units"] == pytest.approx(1.0)
    assert s["topk_share"] == {"1%": 1.0, "5%": 1.0, "10%": 1.0, "25%": 1.0}
    eff, *top = s["metrics"]
    assert eff.metric == "attribution_effective_units"
    assert eff.estimator == "conductance" and eff.params["n_steps"] == 8
    assert [m.params["k"] for m in top] == [1, 1, 2, 5]

    flat = torch.ones(7, 20) * torch.tensor([1.0, -1.0] * 10)  # signs do not matter
    s = unit_summary(flat)
    assert s["effective_units"] == pytest.approx(20.0)
    assert s["topk_share"]["25%"] == pytest.approx(5 / 20)

    conv = torch.zeros(2, 4, 3, 3)
    conv[:, 1] = 1.0  # channel 1 only; spatial positions are summed first
    conv[:, 2, 0, 0], conv[:, 2, 0, 1] = 1.0, -1.0  # sums to zero: no importance
    s = unit_summary(conv)
    assert s["unit"] == "channel" and s["n_units"] == 4
    assert s["importance"] == pytest.approx([0.0, 9.0, 0.0, 0.0])

    zero = unit_summary(torch.zeros(3, 4))
    assert zero["effective_units"] is None
    assert zero["metrics"][0].reason == "all attributions are zero"


# --- files ---------------------------------------------------------------------------


def test_attribute_bottlenecks_writes_inside_out_dir(tmp_path: Path) -> None:
    model, x = _tiny_resnet(), torch.randn(10, 3, 8, 8)
    necks = find_bottlenecks(profile(model, x[:2]), model=model)
    out = tmp_path / "out"
    records = attribute_bottlenecks(model, x, necks, out, n_maps=3, n_steps=4)
    assert [r["layer"] for r in records] == [b.layer for b in necks]
    for r in records:
        assert r["error"] is None and r["target"] == "argmax"
        assert {m.metric for m in r["metrics"]} == {
            "attribution_effective_units",
            "attribution_topk_share",
        }
        assert set(r["sanity"]) == {
            "conductance",
            "integrated_gradients",
            "gradcam",
            "input_ig",
        }
        assert set(r["internal_batch_size"]) >= {"conductance", "gradcam", "input_ig"}
        assert r["ig_delta_mean"] >= 0 and len(r["samples"]) == 3
        for name in r["files"]["npy"] + r["files"]["png"]:
            assert "/" not in name and (out / name).is_file()
        gradcam = np.load(out / f"{r['layer']}.gradcam.npy", allow_pickle=False)
        assert gradcam.shape == (3, 1, 8, 8)
        assert (out / f"{r['layer']}.png").read_bytes()[:4] == b"\x89PNG"
    assert np.load(out / "input_ig.npy", allow_pickle=False).shape == (3, 3, 8, 8)
    # the summary over all samples (kept as channel totals) and the saved subset
    # equal the public functions' results
    first = records[0]
    full = unit_attribution(model, first["layer"], x, n_steps=4)
    expected = unit_summary(full, method="conductance")["metrics"]
    got = [m for m in first["metrics"] if m.estimator == "conductance"]
    assert [m.value for m in got] == pytest.approx([m.value for m in expected])
    saved = np.load(out / f"{first['layer']}.conductance.npy", allow_pickle=False)
    assert np.allclose(saved, full[first["samples"]].numpy(), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not list(out.glob(".tmp-*"))


def test_hostile_layer_names_cannot_escape(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("/tmp/evil", nn.Linear(4, 2))  # torch allows '/' in names
    model.add_module("head", nn.Linear(2, 3))
    x = torch.randn(5, 4)
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "victim.png"
    outside.write_bytes(b"keep")
    (out / "head.png").symlink_to(outside)  # a planted link is replaced, not followed
    necks = [
        Bottleneck("/tmp/evil", "", 4, 2, 3, 2.0, "dense", None),
        Bottleneck("head", "", 4, 3, 3, 1.0, "dense", None),
        Bottleneck("../../escape", "", 4, 2, 3, 2.0, "dense", None),
    ]
    records = attribute_bottlenecks(model, x, necks, out, n_maps=2, n_steps=4)
    assert records[0]["error"] is None
    assert "_tmp_evil.png" in records[0]["files"]["png"]
    assert records[2]["error"] is not None and records[2]["metrics"] == []
    assert set(records[2]) == set(records[0])  # same keys, empty values
    assert outside.read_bytes() == b"keep"
    assert not (out / "head.png").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "victim.png"]
    for bad in ("..", "a..b", ".hidden", "", "layer1.0/../conv"):
        with pytest.raises(InvalidInputError):
            safe_name(bad)
    assert safe_name("layer1.0.conv2") == "layer1.0.conv2"
    assert safe_name("a/b\\c d:e") == "a_b_c_d_e"
