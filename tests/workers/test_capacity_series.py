"""The generalisation gap against neck width, end to end: three MLPs trained here
become the checkpoints of one series (tagged by width), real workers run the
``capacity`` family on each, and the trajectory route orders the gaps by tag.

A series holds one architecture config, so the widths are those of one
``[64, 16, 64]`` MLP whose neck keeps only its first ``w`` units (the others'
weights and biases are zero during and after training): effective neck widths
2, 4 and 16.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tests.workers.conftest import Stack

CONFIG = {"in_features": 64, "widths": [64, 16, 64], "out_features": 10}
ANALYSIS = {
    "samples": 300,
    "seed": 0,
    "device": "cpu",
    "metrics": ["id", "capacity"],
    "id": {"methods": ["twonn"]},
}
WIDTHS = (16, 2, 4)  # uploaded out of order


def _train(width: int, x: torch.Tensor, y: torch.Tensor, path: Path) -> Any:
    """Adam (lr 3e-3, seed 0), 300 full-batch steps on the drawn split's train
    part; units ``width:`` of ``fc1`` held at 0."""
    from analysis import build_model

    torch.manual_seed(0)
    model = build_model("mlp", CONFIG)
    keep = torch.zeros(16)
    keep[:width] = 1

    def mask() -> None:
        with torch.no_grad():
            model.fc1.weight.mul_(keep[:, None])
            model.fc1.bias.mul_(keep)

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        mask()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    mask()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model.eval()


@pytest.mark.slow  # about 40 s: a worker start, three trainings, three analyses
def test_gap_against_neck_width_through_the_trajectory_route(
    make_stack: Any, tmp_path: Path
) -> None:
    from analysis import analyse, load_dataset
    from analysis.capacity import draw_split

    digits = load_dataset("sklearn:digits")
    train, _ = draw_split(len(digits.x), 0.2, seed=0)  # the family's default split
    stack: Stack = make_stack(db="sqlite", broker="sqlite")
    stack.start_worker()
    h = stack.headers
    r = stack.http.post(
        "/v1/series",
        headers=h,
        json={"name": "necks", "architecture": "mlp", "architecture_config": CONFIG},
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    expected = {}
    for width in WIDTHS:
        path = tmp_path / f"w{width}.safetensors"
        model = _train(width, digits.x[train], digits.y[train], path)
        result = analyse(model, digits, ANALYSIS, device="cpu").to_dict()
        head = next(la for la in result["layers"] if la["name"] == "head")
        expected[width] = next(
            m for m in head["metrics"] if m["estimator"] == "accuracy"
        )
        with path.open("rb") as f:
            r = stack.http.post(
                f"/v1/series/{sid}/checkpoints",
                headers=h,
                files={"file": (path.name, f, "application/octet-stream")},
                data={"step": "300", "tag": str(width)},
            )
        assert r.status_code == 201, r.text
        stack.wait_ready("models", r.json()["model"]["id"])
    dataset = stack.upload_dataset(spec="sklearn:digits")
    stack.wait_ready("datasets", dataset)
    r = stack.http.post(
        f"/v1/series/{sid}/analyses",
        headers=h,
        json={"dataset_id": dataset, "config": ANALYSIS},
    )
    assert r.status_code == 202, r.text
    for run in r.json()["data"]:
        done = stack.wait_for(
            f"/v1/analyses/{run['analysis_id']}",
            lambda a: a["status"] in ("succeeded", "failed"),
            timeout_s=180,
        )
        assert done["status"] == "succeeded", done
    body = stack.get(
        f"/v1/series/{sid}/trajectory?metric=generalisation_gap&estimator=accuracy"
        f"&order=tag&dataset_id={dataset}"
    )
    (line,) = body["layers"]  # the rows sit on the output layer only
    assert line["layer"] == "head"
    points = line["points"]
    assert [p["tag"] for p in points] == [2.0, 4.0, 16.0]
    for p in points:
        want = expected[int(p["tag"])]
        assert (p["value"], p["ci_low"], p["ci_high"]) == pytest.approx(
            (want["value"], want["ci_low"], want["ci_high"]), abs=1e-12
        )
        assert p["ci_low"] <= p["value"] <= p["ci_high"]
    print(json.dumps([(p["tag"], round(p["value"], 4)) for p in points]))
    ids = stack.get(
        f"/v1/series/{sid}/trajectory?metric=intrinsic_dimension&estimator=twonn"
        f"&order=tag&dataset_id={dataset}"
    )
    neck = next(li for li in ids["layers"] if li["layer"] == "fc1")
    assert [p["tag"] for p in neck["points"]] == [2.0, 4.0, 16.0]
    assert neck["points"][0]["value"] <= 2 + 0.5  # a 2-unit neck reads about 2
