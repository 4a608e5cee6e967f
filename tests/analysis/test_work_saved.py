"""Work that is not needed is not done, and the time that is spent is accounted."""

from __future__ import annotations

import torch
from torch import nn

from analysis import analyse


class _WithIdentity(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.same = nn.Identity()
        self.drop = nn.Dropout(0.5)  # the identity in eval mode
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.same(self.fc(x))))


def test_layers_equal_to_an_earlier_one_are_measured_once() -> None:
    torch.manual_seed(0)
    x = torch.randn(300, 6)
    cfg = {"samples": 300, "layers": "all", "id": {"methods": ["twonn", "pca90"]}}
    result = analyse(_WithIdentity(), x, cfg, device="cpu")
    fc, same, drop = (result.layer(n) for n in ("fc", "same", "drop"))
    assert all("identical" not in m.flags for m in fc.metrics)
    for copy in (same, drop):
        assert [m.value for m in copy.metrics] == [m.value for m in fc.metrics]
        assert all(m.params["identical_to"] == "fc" for m in copy.metrics)
        assert all("identical" in m.flags for m in copy.metrics)
    timed = result.provenance["layer_timings_s"]["id"]
    assert set(timed) == {"fc", "head"}  # the copies cost nothing


def test_provenance_has_the_time_and_memory_of_every_stage() -> None:
    torch.manual_seed(0)
    x = torch.randn(200, 6)
    result = analyse(_WithIdentity(), x, {"metrics": ["id", "cka"]}, device="cpu")
    prov = result.provenance
    assert {"profile", "capture", "id", "cka"} <= set(prov["timings_s"])
    assert all(v >= 0 for v in prov["timings_s"].values())
    assert prov["memory_peaks_mb"]["capture"]["rss"] > 0
    layer_total = sum(prov["layer_timings_s"]["id"].values())
    assert abs(layer_total - prov["timings_s"]["id"]) < 1e-2
