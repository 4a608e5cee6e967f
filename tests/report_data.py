"""A real result (``bottlelens demo``, 400 samples of sklearn:digits, seed 0) and
attribution files drawn for it, for the report's tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

RESULT = Path(__file__).parent / "data" / "report_result.json"
MISSED_ROW = 3  # the sample whose predicted class is made wrong


def report_result() -> dict[str, Any]:
    """The result with one map sample misclassified (its predicted class moved)."""
    result: dict[str, Any] = json.loads(RESULT.read_text())
    entry = result["attribution"][0]
    entry["predicted"] = copy.copy(entry["labels"])
    entry["predicted"][MISSED_ROW] = (entry["labels"][MISSED_ROW] + 1) % 10
    return result


def write_artifacts(result: dict[str, Any], folder: Path) -> Path:
    """``inputs.npy`` and ``input_ig.npy`` for the maps of the first attribution
    entry: seeded noise of the right shapes (16 samples x 64 pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(result["attribution"][0]["samples"])
    rng = np.random.default_rng(0)
    np.save(folder / "inputs.npy", rng.uniform(0, 16, (n, 64)).astype(np.float32))
    np.save(folder / "input_ig.npy", rng.normal(0, 1, (n, 64)).astype(np.float32))
    return folder
