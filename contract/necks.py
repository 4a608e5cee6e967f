"""The ``necks`` section of a result: the seven questions about each bottleneck,
answered side by side (``GET /v1/analyses/{id}/necks``, the CLI's neck table).

Every answer holds a value with its interval, a verdict from ``VERDICTS`` (or
``"not applicable"`` with the reason) and the rows it came from (``sources``:
layer, metric, estimator), so that a number can be traced to the measurement.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

QUESTIONS: dict[str, str] = {
    "compresses": "the neck compresses: intrinsic dimension and I(X;T) drop into it",
    "keeps_task": "it keeps what the task needs: I(T;Y) and probe accuracy held",
    "latent_factors": "an autoencoder's latent holds the data's generative factors",
    "receptive_field": "stacked convolutions widen the receptive field",
    "skip_carries_input": "the skip connection carries the input around the neck",
    "gaussian_latent": "a VAE pushes its latent towards a standard Gaussian",
    "capacity": "less capacity at the neck means less overfitting",
}
"""The questions, in the order of the issue that asks them; keys of ``answers``."""

NOT_APPLICABLE = "not applicable"
VERDICTS: dict[str, str] = {
    "compresses": "the change is negative and its interval excludes 0",
    "expands": "the change is positive and its interval excludes 0",
    "unclear": "the interval includes 0, or a side has no interval",
    "kept": "the fraction kept reaches 1 within its interval",
    "reduced": "the whole interval of the fraction kept lies below 1",
    "widens": "the effective radius grows into the neck, interval above 0",
    "narrows": "the effective radius shrinks into the neck, interval below 0",
    "identity": "the identity path carries most of the energy (interval above 1/2)",
    "branch": "the branch carries most of the energy (interval below 1/2)",
    "measured": "another family measured it; its rows are the sources",
    NOT_APPLICABLE: "the question does not apply here, or was not measured; see reason",
}


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Record):
    """A row an answer was computed from: ``layer`` (or a section's entry),
    ``metric`` and ``estimator``; ``section`` names the result section when the
    row lives there rather than in ``layers``."""

    layer: str
    metric: str
    estimator: str
    section: str | None = None


class Answer(_Record):
    """One answer: ``value`` in [``ci_low``, ``ci_high``] of ``metric``
    (``estimator``) over ``step``, and the verdict it supports."""

    question: str
    metric: str | None = None
    estimator: str | None = None
    step: str | None = None
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    verdict: str = NOT_APPLICABLE
    reason: str | None = None
    sources: list[Source] = Field(default_factory=list)


class NeckSummary(_Record):
    """One bottleneck: its layers, every change through it, the seven answers.

    ``entering``/``leaving``: the nearest captured layers before and after the
    neck that are at least the bottleneck factor wider than it (``None`` when none
    was captured). ``compression``: the change of every ID estimator and of I(X;T)
    on both steps; ``task``: the fractions of I(T;Y) and probe accuracy kept;
    ``answers``: one headline per question of ``QUESTIONS``.
    """

    layer: str
    block: str
    entering: str | None = None
    leaving: str | None = None
    compression: list[Answer] = Field(default_factory=list)
    task: list[Answer] = Field(default_factory=list)
    answers: dict[str, Answer] = Field(default_factory=dict)


class NecksResult(_Record):
    """The ``necks`` section: ``method`` says how intervals were combined."""

    method: dict[str, str] = Field(default_factory=dict)
    necks: list[NeckSummary] = Field(default_factory=list)
    reason: str | None = None
