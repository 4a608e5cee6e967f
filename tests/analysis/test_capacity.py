"""Capacity: MLPs of three neck widths trained here on a small task.

Asserted: a gap measured for each model, finite and equal to train minus
held-out; the table in width order; the ID at each neck finite and at most the
neck's width; a drawn split is the same for the same seed."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from analysis.architectures import build_model
from analysis.capacity import capacity_table, draw_split, generalisation_gap
from analysis.datasets import load_dataset
from analysis.errors import InvalidInputError


def train_mlp(width: int, x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    """64 -> 64 -> width -> 64 -> 10, Adam, 100 full-batch steps, seed 0."""
    torch.manual_seed(0)
    model = build_model(
        "mlp", {"in_features": 64, "widths": [64, width, 64], "out_features": 10}
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.slow  # about 10 s on a busy 2-core machine
def test_gap_per_width_in_width_order() -> None:
    data = load_dataset("sklearn:digits")
    x, y = data.x.float() / 16.0, data.y
    train, held = draw_split(len(x), held_out=0.3, seed=0)
    series = [
        (w, train_mlp(w, x[train], y[train]), (x[train], y[train]), (x[held], y[held]))
        for w in (16, 2, 4)
    ]
    rows = capacity_table(series, samples=300)
    assert [r["width"] for r in rows] == [2, 4, 16]
    for r in rows:
        assert r["layer"] == "fc1"  # the neck of widths [64, w, 64]
        assert math.isfinite(r["gap"])
        assert r["gap"] == pytest.approx(r["train"] - r["held_out"])
        assert 0 < r["held_out"] <= 1 and 0 < r["train"] <= 1
        assert 0 < r["id"]["value"] <= r["width"] + 1e-6
    losses = capacity_table(series, score="loss", samples=300)
    assert all(r["gap"] == pytest.approx(r["held_out"] - r["train"]) for r in losses)


def test_drawn_split_is_stored_by_its_seed() -> None:
    a, b = draw_split(100, 0.2, seed=3)
    assert len(b) == 20 and len(a) == 80
    assert set(a.tolist()).isdisjoint(b.tolist())
    assert torch.equal(b, draw_split(100, 0.2, seed=3)[1])
    assert not torch.equal(b, draw_split(100, 0.2, seed=4)[1])
    with pytest.raises(InvalidInputError):
        draw_split(100, 1.5)


# --- the gap's interval -------------------------------------------------------


def test_accuracy_gap_interval_is_newcombes_method_10() -> None:
    """Newcombe (1998), Table II, example (a): 56/70 - 48/80 = 0.2 with the hybrid
    score interval [0.0524, 0.3339] (printed to 4 decimals)."""
    train = torch.cat([torch.ones(56), torch.zeros(14)])
    held = torch.cat([torch.ones(48), torch.zeros(32)])
    g = generalisation_gap(train, held, "accuracy")
    assert g["gap"] == pytest.approx(0.2, abs=1e-12)
    assert (g["ci_low"], g["ci_high"]) == pytest.approx((0.0524, 0.3339), abs=6e-5)
    assert (g["n_train"], g["n_held_out"]) == (70, 80)


@pytest.mark.parametrize("score", ["accuracy", "loss"])
def test_gap_intervals_cover_the_true_gap_95_percent(score: str) -> None:
    """1000 seeded draws (seed 0): train 200 and held-out 100 samples, Bernoulli
    0.9 vs 0.8 (true gap 0.1) or exponential losses of mean 1 vs 1.5 (true gap
    0.5). A 95% interval covers the truth in [0.925, 0.975] of the draws (the
    Monte Carlo standard error is 0.007)."""
    g = torch.Generator().manual_seed(0)
    hits = 0
    for _ in range(1000):
        if score == "accuracy":
            a = (torch.rand(200, generator=g) < 0.9).double()
            b = (torch.rand(100, generator=g) < 0.8).double()
            truth = 0.1
        else:
            a = -torch.log(torch.rand(200, generator=g).double())
            b = -1.5 * torch.log(torch.rand(100, generator=g).double())
            truth = 0.5
        r = generalisation_gap(a, b, score)  # type: ignore[arg-type]
        hits += r["ci_low"] <= truth <= r["ci_high"]
    assert 0.925 <= hits / 1000 <= 0.975


# --- the capacity family --------------------------------------------------------

CLASSES = 5


class Lookup(torch.nn.Module):
    """4 -> 32 -> 2 -> 32 -> 5 whose output is a table of logits indexed by the
    sample's first input (its row number): ``10 * one_hot(answer)``. The layers
    run (they make the neck ``neck``), their values are multiplied by 0."""

    def __init__(self, answers: torch.Tensor) -> None:
        super().__init__()
        self.fc0 = torch.nn.Linear(4, 32)
        self.neck = torch.nn.Linear(32, 2)
        self.fc2 = torch.nn.Linear(2, 32)
        self.head = torch.nn.Linear(32, CLASSES)
        self.register_buffer("table", 10.0 * F.one_hot(answers, CLASSES).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(torch.relu(self.fc2(self.neck(torch.relu(self.fc0(x))))))
        return self.table[x[:, 0].long()] + 0.0 * h  # (N, 5)


def lookup_data(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    x[:, 0] = torch.arange(n)
    return x, torch.randint(0, CLASSES, (n,), generator=g)


@pytest.mark.parametrize(
    ("split", "train", "held_out"),
    [("indices", [0, 150], [150, 200]), ("fractions", [0, 0.75], [0.75, 1])],
)
def test_family_measures_a_known_gap_on_the_whole_dataset(
    split: str, train: list[float], held_out: list[float]
) -> None:
    """200 rows, rows 0-149 train, 150-199 held out; the model answers every train
    row right and 20 of the 50 held-out rows: accuracy gap 1 - 20/50 = 0.6
    exactly; cross-entropy gap 30/50 * 10 = 6 (the log terms cancel), to 1e-5.
    The run analyses 100 samples; the gap is scored on all 200 rows."""
    from analysis import analyse
    from analysis.capacity import generalisation_gap as gap_of
    from analysis.datasets import Dataset

    x, y = lookup_data()
    answers = y.clone()
    answers[170:] = (y[170:] + 1) % CLASSES  # 30 held-out rows wrong
    data = Dataset(x, y, "lookup", "lookup", "0" * 64)
    cfg = {
        "samples": 100,
        "metrics": ["id", "capacity", "necks"],
        "capacity": {"split": split, "train": train, "held_out": held_out},
    }
    result = analyse(Lookup(answers), data, cfg, device="cpu")
    section = result.sections["capacity"]
    assert (section["split"]["n_train"], section["split"]["n_held_out"]) == (150, 50)
    assert section["split"]["over"] == "the dataset"
    assert (section["target"], section["output_layer"]) == ("labels", "head")
    head = next(la for la in result.layers if la.name == "head")
    acc = head.metric("generalisation_gap", "accuracy")
    loss = head.metric("generalisation_gap", "loss")
    assert acc is not None and loss is not None
    assert acc.value == pytest.approx(0.6, abs=1e-12)
    expected = gap_of(
        torch.ones(150), torch.cat([torch.ones(20), torch.zeros(30)]), "accuracy"
    )
    assert (acc.ci_low, acc.ci_high) == pytest.approx(
        (expected["ci_low"], expected["ci_high"]), abs=1e-12
    )
    assert loss.value == pytest.approx(6.0, abs=1e-5)
    assert loss.ci_low < 6.0 < loss.ci_high
    assert (acc.params["train"], acc.params["held_out"]) == pytest.approx((1.0, 0.4))
    (entry,) = section["necks"]
    assert (entry["layer"], entry["width"]) == ("neck", 2)
    neck = next(la for la in result.layers if la.name == "neck")
    ids = [m for m in entry["metrics"] if m["metric"] == "intrinsic_dimension"]
    assert [(m["estimator"], m["value"]) for m in ids] == [
        (m.estimator, m.value)
        for m in neck.metrics
        if m.metric == "intrinsic_dimension"
    ]
    assert ids and all(m["layer"] == "neck" for m in ids)
    answer = result.sections["necks"]["necks"][0]["answers"]["capacity"]
    assert (answer["metric"], answer["estimator"]) == ("generalisation_gap", "accuracy")
    assert answer["value"] == pytest.approx(0.6, abs=1e-12)
    assert answer["verdict"] == "measured"
    sources = {(s["layer"], s["metric"], s["estimator"]) for s in answer["sources"]}
    assert ("head", "generalisation_gap", "accuracy") in sources
    assert ("neck", "intrinsic_dimension", "twonn") in sources


class Offset(torch.nn.Module):
    """A reconstruction ``x + c`` on the held-out rows of a drawn split, ``x``
    elsewhere: its mean squared error is 0 on train rows and ``c^2`` held out."""

    def __init__(self, held: torch.Tensor, n: int, c: float) -> None:
        super().__init__()
        self.enc = torch.nn.Linear(4, 1)
        self.dec = torch.nn.Linear(1, 4)
        mask = torch.zeros(n)
        mask[held] = c
        self.register_buffer("shift", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dec(self.enc(x))
        return x + self.shift[x[:, 0].long()].unsqueeze(1) + 0.0 * h  # (N, 4)


def test_drawn_split_is_the_seeds_and_a_reconstruction_scores_its_input() -> None:
    """No labels, a reconstruction: the target is the input; accuracy is null with
    the reason; the loss gap is c^2 = 0.25 exactly on the split that
    ``draw_split(200, 0.25, seed=3)`` gives, whose hashes the section stores."""
    import hashlib

    from analysis import analyse

    x, _ = lookup_data()
    train, held = draw_split(200, 0.25, seed=3)
    cfg = {
        "samples": 50,
        "seed": 3,
        "metrics": ["capacity"],
        "capacity": {"held_out_fraction": 0.25},
    }
    result = analyse(Offset(held, 200, 0.5), x, cfg, device="cpu")
    section = result.sections["capacity"]
    assert section["target"] == "input"
    split = section["split"]
    assert (split["kind"], split["seed"], split["held_out_fraction"]) == (
        "drawn",
        3,
        0.25,
    )
    for part, idx in (("train", train), ("held_out", held)):
        digest = hashlib.sha256(idx.numpy().astype("<i8").tobytes()).hexdigest()
        assert split[f"{part}_sha256"] == digest
    acc, loss = section["metrics"]
    assert acc["value"] is None and "class labels" in acc["reason"]
    assert loss["value"] == pytest.approx(0.25, abs=1e-6)
    assert loss["params"]["target"] == "input"


def test_split_config_is_checked_and_each_part_capped() -> None:
    """Each value and how the parts fit together are checked with the config
    (the API refuses them at once); the dataset's size when the family runs."""
    from analysis.errors import DataError
    from analysis.families.capacity import resolve_split
    from contract.config import parse_config
    from contract.errors import ContractError

    def section(**given: object):
        cfg = parse_config({"metrics": ["capacity"], "capacity": given})
        return cfg.section("capacity")

    with pytest.raises(ContractError) as info:  # what the JSON schema says
        section(held_out_fraction=1.5, scores=[], train=[0, "a"])
    assert len(info.value.problems) == 3

    for bad, words in (
        ({"split": "indices", "train": [0, 10], "held_out": [5, 20]}, "overlap"),
        ({"split": "indices", "train": [0, 9.5], "held_out": [10, 20]}, "integers"),
        ({"split": "fractions", "train": [0, 0.8], "held_out": [0.8, 2]}, "[0, 1]"),
        ({"split": "fractions"}, "needs [start, stop)"),
        ({"train": [0, 10]}, "drawn split"),
    ):
        with pytest.raises(ContractError, match=re.escape(words)):
            section(**bad)
    with pytest.raises(DataError, match="rows"):  # the dataset is too small
        resolve_split(
            section(split="indices", train=[0, 50], held_out=[50, 200]), 100, seed=0
        )
    capped = section(
        split="indices", train=[0, 100], held_out=[100, 130], max_samples=10
    )
    a, b, info = resolve_split(capped, 130, seed=0)
    assert (len(a), len(b)) == (10, 10)
    assert a.max() < 100 <= b.min() and info["n_train"] == 10
    with pytest.raises(InvalidInputError, match="at least 2 rows"):
        resolve_split(capped, 90, seed=0)
