"""The ``bottlenecks`` command line, driven like a user would."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from workers.cli import app

runner = CliRunner()


def test_demo_trains_analyses_and_writes_result_and_picture(tmp_path) -> None:
    out = runner.invoke(
        app, ["demo", "--workdir", str(tmp_path), "--samples", "400", "--device", "cpu"]
    )
    assert out.exit_code == 0, out.output
    assert "ID twonn" in out.output and "bottlenecks" in out.output
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
