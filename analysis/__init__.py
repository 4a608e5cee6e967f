"""bottlelens analysis library: pure torch, usable from a notebook.

>>> from analysis import analyse, build_model, load_dataset
>>> result = analyse(model, load_dataset("sklearn:digits"), {"samples": 1000})
"""

from analysis.architectures import (
    available_architectures,
    build_model,
    register_architecture,
)
from analysis.bottlenecks import find_bottlenecks
from analysis.capacity import CapacityModel, capacity_table, draw_split
from analysis.capture import Capture, profile
from analysis.checkpoints import (
    Checkpoint,
    load_model,
    load_weights_into,
    read_checkpoint,
)
from analysis.config import AnalysisConfig, parse_config
from analysis.datasets import Dataset, load_dataset
from analysis.errors import (
    BottlelensError,
    CheckpointMismatchError,
    DataError,
    FileTooLargeError,
    InvalidInputError,
    ShapeMismatchError,
    UnknownArchitectureError,
    UnsafeFileError,
)
from analysis.hooks import forward_hooks
from analysis.intake import dry_run
from analysis.intrinsic_dimension import (
    ID_ESTIMATORS,
    MLE,
    ParticipationRatio,
    PCADimension,
    TwoNN,
    estimate_id,
)
from analysis.manifolds import MANIFOLDS, make_manifold
from analysis.mutual_information import MI_ESTIMATORS, estimate_mi
from analysis.neighbors import knn
from analysis.pipeline import analyse
from analysis.probes import probe_accuracy
from analysis.result import SCHEMA_VERSION, AnalysisResult, LayerResult
from analysis.threads import set_threads
from analysis.types import Bottleneck, LayerInfo, MetricValue

__all__ = [
    "ID_ESTIMATORS",
    "MANIFOLDS",
    "MI_ESTIMATORS",
    "MLE",
    "SCHEMA_VERSION",
    "AnalysisConfig",
    "AnalysisResult",
    "BottlelensError",
    "Bottleneck",
    "CapacityModel",
    "Capture",
    "Checkpoint",
    "CheckpointMismatchError",
    "DataError",
    "Dataset",
    "FileTooLargeError",
    "InvalidInputError",
    "LayerInfo",
    "LayerResult",
    "MetricValue",
    "PCADimension",
    "ParticipationRatio",
    "ShapeMismatchError",
    "TwoNN",
    "UnknownArchitectureError",
    "UnsafeFileError",
    "analyse",
    "available_architectures",
    "build_model",
    "capacity_table",
    "draw_split",
    "dry_run",
    "estimate_id",
    "estimate_mi",
    "find_bottlenecks",
    "forward_hooks",
    "knn",
    "load_dataset",
    "load_model",
    "load_weights_into",
    "make_manifold",
    "parse_config",
    "probe_accuracy",
    "profile",
    "read_checkpoint",
    "register_architecture",
    "set_threads",
]
