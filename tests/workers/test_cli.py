"""The ``bottlenecks`` command line, driven like a user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.workers.conftest import MLP_CONFIG
from workers.cli import app

runner = CliRunner()


def test_demo_trains_analyses_and_writes_result_and_picture(tmp_path) -> None:
    out = runner.invoke(
        app, ["demo", "--workdir", str(tmp_path), "--samples", "400", "--device", "cpu"]
    )
    assert out.exit_code == 0, out.output
    assert "twonn" in out.output and "bottlenecks" in out.output
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    result = json.loads((tmp_path / "result.json").read_text())
    assert any(layer["is_bottleneck"] for layer in result["layers"])
    png = (tmp_path / "profile.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    again = runner.invoke(
        app,
        [
            "analyze",
            "--arch",
            "mlp",
            "--arch-config",
            json.dumps(
                {"in_features": 64, "widths": [128, 64, 8, 64], "out_features": 10}
            ),
            "--weights",
            str(tmp_path / "demo_mlp.safetensors"),
            "--data",
            "sklearn:digits",
            "--samples",
            "200",
            "--layers",
            "fc*,act*",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "r2.json"),
        ],
    )
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "r2.json").read_text())["config"]["samples"] == 200


def test_analyze_wrong_architecture_config_is_a_clear_error(tmp_path) -> None:
    runner.invoke(
        app, ["demo", "--workdir", str(tmp_path), "--samples", "50", "--device", "cpu"]
    )
    out = runner.invoke(
        app,
        [
            "analyze",
            "--arch",
            "mlp",
            "--arch-config",
            json.dumps(
                {"in_features": 64, "widths": [128, 64, 9, 64], "out_features": 10}
            ),
            "--weights",
            str(tmp_path / "demo_mlp.safetensors"),
            "--data",
            "sklearn:digits",
            "--device",
            "cpu",
        ],
    )
    assert out.exit_code == 2
    assert "error" in out.output and "shape" in out.output.lower()


def test_analyze_bad_json_and_missing_file() -> None:
    out = runner.invoke(
        app,
        [
            "analyze",
            "--arch",
            "mlp",
            "--weights",
            "nope.pt",
            "--data",
            "sklearn:digits",
        ],
    )
    assert out.exit_code == 2 and "not a file" in out.output
    out = runner.invoke(
        app,
        [
            "analyze",
            "--arch",
            "mlp",
            "--weights",
            __file__,
            "--data",
            "sklearn:digits",
            "--arch-config",
            "{bad",
        ],
    )
    assert out.exit_code == 2 and "not valid JSON" in out.output


def test_unknown_architecture_lists_the_available_ones(tmp_path) -> None:
    weights = tmp_path / "w.safetensors"
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(weights))
    out = runner.invoke(
        app,
        [
            "analyze",
            "--arch",
            "resnet9000",
            "--weights",
            str(weights),
            "--data",
            "sklearn:digits",
        ],
    )
    assert out.exit_code == 2 and "mlp" in out.output


def _analyze(inputs, *extra: str) -> list[str]:
    return [
        "analyze",
        "--arch",
        "mlp",
        "--arch-config",
        json.dumps(MLP_CONFIG),
        "--weights",
        str(inputs.weights),
        "--data",
        str(inputs.data),
        "--device",
        "cpu",
        "--threads",
        "1",
        *extra,
    ]


def test_config_json_wins_over_flags_left_at_their_defaults(tmp_path, inputs) -> None:
    cfg = json.dumps({"samples": 120, "layers": "fc*", "seed": 3})
    out = runner.invoke(
        app, _analyze(inputs, "--config", cfg, "--out", str(tmp_path / "a.json"))
    )
    assert out.exit_code == 0, out.output
    got = json.loads((tmp_path / "a.json").read_text())["config"]
    assert (got["samples"], got["layers"], got["seed"]) == (120, "fc*", 3)

    given = _analyze(inputs, "--config", cfg, "--samples", "150", "--seed", "0")
    out = runner.invoke(app, [*given, "--out", str(tmp_path / "b.json")])
    assert out.exit_code == 0, out.output
    got = json.loads((tmp_path / "b.json").read_text())["config"]
    assert (got["samples"], got["layers"], got["seed"]) == (150, "fc*", 0)


@pytest.mark.parametrize(
    ("option", "path", "says"),
    [
        ("--out", "missing/r.json", "does not exist"),
        ("--out", "/proc/r.json", "cannot write"),
        ("--out", ".", "is a folder"),
        ("--plot", "missing/p.png", "does not exist"),
        ("--artifacts", "missing/maps", "does not exist"),
        ("--artifacts", "/proc/maps", "cannot write"),
    ],
)
def test_unwritable_outputs_fail_before_any_work(
    tmp_path, inputs, monkeypatch, option, path, says
) -> None:
    import analysis

    def no_work(*args, **kwargs):
        raise AssertionError("the analysis must not start")

    monkeypatch.setattr(analysis, "load_model", no_work)
    target = path if path.startswith("/") else str(tmp_path / path)
    out = runner.invoke(app, _analyze(inputs, option, target))
    assert out.exit_code == 2, out.output
    assert option in out.output and says in out.output
    assert "Traceback" not in out.output


def test_default_artifacts_folder_is_checked_too(inputs, monkeypatch) -> None:
    monkeypatch.chdir("/proc")  # result.artifacts would be made here
    out = runner.invoke(app, _analyze(inputs, "--metrics", "id,attribution"))
    assert out.exit_code == 2, out.output
    assert "--artifacts (default" in out.output and "cannot write" in out.output


def test_a_result_that_cannot_be_written_goes_to_a_fallback_file(
    tmp_path, inputs, monkeypatch
) -> None:
    from analysis.result import AnalysisResult

    save = AnalysisResult.save
    wanted = tmp_path / "r.json"

    def disk_full(self, path):
        if Path(path) == wanted:
            raise OSError(28, "No space left on device")
        save(self, path)

    monkeypatch.setattr(AnalysisResult, "save", disk_full)
    monkeypatch.chdir(tmp_path)
    out = runner.invoke(app, _analyze(inputs, "--samples", "60", "--out", str(wanted)))
    assert out.exit_code == 2, out.output
    assert "No space left on device" in out.output
    (fallback,) = tmp_path.glob("bottlelens-result-*.json")
    assert fallback.name in out.output.replace("\n", "")
    assert json.loads(fallback.read_text())["config"]["samples"] == 60


def _raising_builder(config):
    raise RuntimeError("weights for num_classes=7 are not available\nmore detail")


def test_a_plugin_that_raises_is_one_line_and_exit_2(tmp_path, monkeypatch) -> None:
    from importlib import metadata

    import torch
    from safetensors.torch import save_file

    ep = metadata.EntryPoint(
        "broken_net",
        "tests.workers.test_cli:_raising_builder",
        "bottlelens.architectures",
    )
    monkeypatch.setattr(
        metadata, "entry_points", lambda *, group: metadata.EntryPoints([ep])
    )
    weights = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(1)}, str(weights))
    out = runner.invoke(
        app,
        [
            "analyze",
            "--arch",
            "broken_net",
            "--weights",
            str(weights),
            "--data",
            "sklearn:digits",
        ],
    )
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.output
    assert "broken_net" in lines[0] and "RuntimeError" in lines[0]
    assert "num_classes=7" in lines[0]
