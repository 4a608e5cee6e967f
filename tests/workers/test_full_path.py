"""Upload over HTTP, validate and analyse in a real Celery worker, read the result
back over HTTP: it equals ``analysis.analyse`` run here on the same inputs."""

from __future__ import annotations

import pytest

from tests.workers.conftest import expected_result, without_timing

pytestmark = pytest.mark.slow

CONFIG = {"samples": 300, "seed": 7, "layers": "all", "device": "cpu"}


@pytest.mark.parametrize(
    ("db", "broker"), [("postgres", "redis"), ("sqlite", "sqlite")]
)
def test_upload_validate_analyse_results_equal_the_library(
    make_stack, inputs, db, broker
) -> None:
    stack = make_stack(db=db, broker=broker)
    stack.start_worker()
    model_id = stack.upload_model(inputs.weights)
    dataset_id = stack.upload_dataset(inputs.data)

    model = stack.wait_ready("models", model_id)
    dataset = stack.wait_ready("datasets", dataset_id)
    assert model["error"] is None
    assert dataset["n_samples"] == 600 and dataset["sample_shape"] == [16]
    assert dataset["has_labels"] is True and dataset["dtype"] == "float32"

    analysis_id = stack.submit(model_id, dataset_id, CONFIG)
    done = stack.wait_for(
        f"/v1/analyses/{analysis_id}",
        lambda a: a["status"] in ("succeeded", "failed", "cancelled"),
    )
    assert done["status"] == "succeeded", done
    assert done["progress"] == 1.0 and done["attempt"] == 1

    got = stack.get(f"/v1/analyses/{analysis_id}/results")
    want = expected_result(inputs, CONFIG)
    assert without_timing(got) == without_timing(want)
    assert got["provenance"]["duration_s"] > 0


def test_builtin_dataset_and_a_rejected_model(make_stack, inputs) -> None:
    """A spec is validated by the worker too; weights that do not fit the
    architecture are rejected with the library's message and code."""
    stack = make_stack(db="postgres", broker="redis")
    stack.start_worker()
    dataset_id = stack.upload_dataset(spec="synthetic:sphere?d=2&D=16&n=300")
    wrong = dict(in_features=16, widths=[32, 5, 32], out_features=3)
    model_id = stack.upload_model(inputs.weights, wrong)

    dataset = stack.wait_ready("datasets", dataset_id)
    assert dataset["n_samples"] == 300 and dataset["sha256"]
    model = stack.wait_for(
        f"/v1/models/{model_id}", lambda m: m["status"] != "validating"
    )
    assert model["status"] == "rejected"
    assert model["error"]["code"] == "checkpoint_mismatch"
    assert "shape" in model["error"]["message"]
