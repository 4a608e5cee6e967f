"""The metric families: what each measures, its config section with defaults, and
what it needs from the data and the run.

The analysis library registers one implementation per family under the same name
(``analysis.families``); the pipeline loops over this order. A new family adds its
declaration here, its module there, and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.errors import ContractError
from contract.estimators import ESTIMATORS, ID_METHODS, ProbeMIParams, resolve_params
from contract.types import Int


class Section(BaseModel):
    """A family's config section: strict types, no unknown keys, frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _estimator_section(
    family: str, methods: tuple[str, ...], params: dict[str, Any]
) -> None:
    known = ESTIMATORS[family]
    problems = [
        f"methods: unknown estimator {m!r}; choose from {', '.join(known)}"
        for m in methods
        if m not in known
    ]
    for name, given in params.items():
        if name not in known:
            problems.append(
                f"params: names unknown estimator {name!r}; choose from "
                f"{', '.join(known)}"
            )
            continue
        if not isinstance(given, dict):
            problems.append(f"params.{name}: must be an object of parameters")
            continue
        try:
            resolve_params(family, name, given)
        except ContractError as exc:
            problems += [f"params.{name}.{p}" for p in exc.problems]
    if problems:
        raise ValueError("; ".join(problems))


class IdSection(Section):
    """``methods``: intrinsic-dimension estimators; ``params``: per-estimator
    parameters, e.g. ``{"mle": {"k": 10}}``."""

    methods: tuple[str, ...] = ID_METHODS
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _estimators(self) -> IdSection:
        _estimator_section("id", self.methods, self.params)
        return self


class MiSection(Section):
    """``methods``: MI estimators of I(X;T) (``mi_input``) and I(T;Y)
    (``mi_output``); ``params``: per-estimator parameters. The probe estimator's
    folds are the ``probe`` section's ``cv``."""

    methods: tuple[str, ...] = ("ksg", "gaussian", "binning", "probe")
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _estimators(self) -> MiSection:
        probe = self.params.get("probe")
        if isinstance(probe, dict) and "cv" in probe:
            raise ValueError("params.probe.cv: set the folds once, as probe.cv")
        _estimator_section("mi", self.methods, self.params)
        return self


class ProbeSection(Section):
    """``cv``: folds of the cross-validated logistic-regression probe."""

    cv: Int = Field(default=ProbeMIParams().cv, ge=2, le=20)


class CkaSection(Section):
    """``layers``: ``"auto"`` (blocks, stages and bottlenecks among the captured
    layers) or ``"all"`` (every captured layer)."""

    layers: Literal["auto", "all"] = "auto"


class AttributionSection(Section):
    """``target``: ``"auto"`` (reconstruction when the output has the input's
    shape, else the predicted class), ``"predicted"``, ``"label"`` (each sample's
    true class), ``"reconstruction"`` or an output index; ``samples``: seeded
    samples whose unit attributions are summarised (effective units, top-k
    share), or ``"all"``; ``maps``: seeded samples, among those, whose maps are
    saved and sanity-checked; ``steps``: integration steps; ``resamples``:
    bootstrap draws of the summaries' intervals over the summarised samples.

    Each summarised sample costs about ``2 steps + 1`` forward+backward passes per
    bottleneck, each map sample ``3 steps + 2`` more (the sanity check): with 48
    samples the README's ResNet example (two bottlenecks, 2,000 samples) took
    32-37 CPU seconds on one thread, the sanity check a third of it. Against all
    samples, on a trained small ResNet and the demo MLP, 48 samples moved the
    effective number of units by 0.7-2.5% on average (at most 5.6% over 10 draws)
    and the top-10% share by 4-12%."""

    target: Literal["auto", "predicted", "label", "reconstruction"] | Int = "auto"
    samples: Literal["all"] | Annotated[Int, Field(ge=1)] = 48
    maps: Int = Field(default=16, ge=1, le=256)
    steps: Int = Field(default=32, ge=2, le=1024)
    resamples: Int = Field(default=200, ge=20, le=10000)

    @field_validator("target")
    @classmethod
    def _index(cls, target: str | int) -> str | int:
        if isinstance(target, int) and target < 0:
            raise ValueError("an output index must be >= 0")
        return target


@dataclass(frozen=True)
class FamilySpec:
    """A metric family.

    ``needs_labels``: ``"class"`` (skipped with a warning when the data has no
    integer labels), ``"optional"`` (some rows need them) or ``"no"``.
    ``min_samples``: below it the family is not run (a warning says so).
    ``section``: the result key of a family that adds a section besides layer rows.
    ``after``: families whose rows and sections this one reads; when they run,
    its section is computed after theirs.
    """

    name: str
    config: type[Section]
    summary: str
    needs_labels: Literal["class", "optional", "no"] = "no"
    needs_gradients: bool = False
    needs_artifacts: bool = False
    min_samples: int = 3
    metrics: tuple[str, ...] = ()
    section: str | None = None
    after: tuple[str, ...] = ()


FAMILIES: dict[str, FamilySpec] = {
    f.name: f
    for f in (
        FamilySpec(
            "id",
            IdSection,
            "intrinsic dimension of every captured layer",
            metrics=("intrinsic_dimension",),
        ),
        FamilySpec(
            "mi",
            MiSection,
            "I(X;T) and I(T;Y) of every captured layer: the information plane",
            needs_labels="optional",
            metrics=("mi_input", "mi_output"),
        ),
        FamilySpec(
            "probe",
            ProbeSection,
            "cross-validated linear-probe accuracy of every captured layer",
            needs_labels="class",
            min_samples=10,
            metrics=("probe_accuracy",),
        ),
        FamilySpec(
            "cka",
            CkaSection,
            "linear CKA between captured layers",
            min_samples=4,
            section="similarity",
        ),
        FamilySpec(
            "attribution",
            AttributionSection,
            "Captum attribution through every bottleneck, with saved maps",
            needs_gradients=True,
            needs_artifacts=True,
            metrics=(
                "attribution_effective_units",
                "attribution_topk_share",
            ),
            section="attribution",
        ),
    )
}


class SkipsSection(Section):
    """No parameters: every bottleneck whose skip ``torch.fx`` finds gets a row."""


class ReceptiveFieldSection(Section):
    """``samples``: seeded samples whose input gradients are averaged for the
    effective receptive field; ``resamples``: bootstrap draws of its intervals."""

    samples: Int = Field(default=16, ge=1, le=1024)
    resamples: Int = Field(default=200, ge=20, le=10000)


class NecksSection(Section):
    """No parameters: the answers are read from the families that ran."""


FAMILIES.update(
    {
        f.name: f
        for f in (
            FamilySpec(
                "skips",
                SkipsSection,
                "energy share, cosine and CKA of the identity and branch paths "
                "at every skip connection around a bottleneck",
                min_samples=4,
                section="skips",
            ),
            FamilySpec(
                "receptive_field",
                ReceptiveFieldSection,
                "theoretical and effective (Luo et al. 2016) receptive field of "
                "every captured feature map, with pictures",
                needs_gradients=True,
                min_samples=2,
                metrics=("receptive_field_radius",),
            ),
            FamilySpec(
                "necks",
                NecksSection,
                "the seven questions per bottleneck, answered side by side",
                section="necks",
                after=(
                    "id",
                    "mi",
                    "probe",
                    "skips",
                    "receptive_field",
                    "latent",
                    "capacity",
                ),
            ),
        )
    }
)


class LatentSection(Section):
    """``threshold``: variance over the data of a posterior-mean coordinate above
    which the unit is active (Burda et al. 2016); ``span``: traversals move one
    coordinate over +-``span`` standard deviations in ``steps`` steps; ``dims``:
    the most active coordinates traversed."""

    threshold: float = Field(default=0.01, gt=0)
    span: float = Field(default=3.0, gt=0, le=10)
    steps: Int = Field(default=7, ge=3, le=25)
    dims: Int = Field(default=16, ge=1, le=64)


FAMILIES["latent"] = FamilySpec(
    "latent",
    LatentSection,
    "at every autoencoder or VAE latent: KL per coordinate, active units, the "
    "aggregate posterior against N(0, I), saved traversals",
    needs_artifacts=True,
    min_samples=10,
    metrics=("latent_kl", "latent_active_units", "latent_prior_kl"),
    section="latent",
)


class CapacitySection(Section):
    """The split of the dataset's rows the generalisation gap is measured on.

    ``split``: ``"drawn"`` holds out ``held_out_fraction`` of the rows by a
    permutation seeded with the run's ``seed`` (``analysis.capacity.draw_split``
    gives the same split to train on); ``"indices"`` or ``"fractions"``: ``train``
    and ``held_out`` are ``[start, stop)`` of each part, as row indices or as
    fractions of the dataset, e.g. ``[0, 0.8]`` and ``[0.8, 1]``. ``scores``:
    ``accuracy`` (class labels) and ``loss``; ``target``: ``auto`` (the input
    when the output has its size, else the labels), ``labels`` or ``input``;
    ``max_samples``: at most this many rows of each part are scored (seeded)."""

    split: Literal["drawn", "indices", "fractions"] = "drawn"
    train: tuple[float, float] | None = None
    held_out: tuple[float, float] | None = None
    held_out_fraction: float = Field(default=0.2, gt=0, lt=1)
    scores: tuple[Literal["accuracy", "loss"], ...] = Field(
        default=("accuracy", "loss"), min_length=1
    )
    target: Literal["auto", "labels", "input"] = "auto"
    max_samples: Int = Field(default=20000, ge=10)

    @field_validator("train", "held_out", "scores", mode="before")
    @classmethod
    def _json_lists(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _split_holds_together(self) -> CapacitySection:
        problems = self.split_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def split_problems(self) -> list[str]:
        """What is wrong with the split as given, every problem: checked when the
        config is (the API refuses it at once) and again, with the dataset's size,
        when the family runs. The parts depend on each other, which the config's
        JSON schema cannot say."""
        parts = {"train": self.train, "held_out": self.held_out}
        if self.split == "drawn":
            given = [k for k, v in parts.items() if v is not None]
            if given:
                return [
                    f"{', '.join(given)}: a drawn split takes held_out_fraction; "
                    'name ranges with split "indices" or "fractions"'
                ]
            return []
        problems = []
        for part, pair in parts.items():
            if pair is None:
                problems.append(f"{part}: split {self.split!r} needs [start, stop)")
            elif not 0 <= pair[0] < pair[1]:
                problems.append(f"{part}: needs 0 <= start < stop, got {list(pair)}")
            elif self.split == "fractions" and pair[1] > 1:
                problems.append(f"{part}: fractions lie in [0, 1], got {list(pair)}")
            elif self.split == "indices" and not all(v.is_integer() for v in pair):
                problems.append(f"{part}: row indices are integers, got {list(pair)}")
        if not problems and self.train and self.held_out:
            (a, b), (c, d) = self.train, self.held_out
            if a < d and c < b:
                problems.append("train and held_out overlap")
        return problems


FAMILIES["capacity"] = FamilySpec(
    "capacity",
    CapacitySection,
    "the generalisation gap (train minus held-out accuracy, held-out minus train "
    "loss) on a named or drawn split, next to the ID at the narrowest neck",
    needs_labels="optional",
    min_samples=2,
    metrics=("generalisation_gap",),
    section="capacity",
    after=("id",),
)

FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)
