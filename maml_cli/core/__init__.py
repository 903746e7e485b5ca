"""The meta-learning core: a library usable from Python without Hydra (or the rest of maml_cli)."""

from maml_cli.core.config import (
    AdaptScope,
    BatchNormPolicy,
    Engine,
    InnerLoopConfig,
    InnerOptimizer,
    LrGranularity,
    Method,
    OptimizerConfig,
    ScheduleSpan,
)
from maml_cli.core.inner_lr import InnerLearningRates
from maml_cli.core.learner import AdaptationCurve, MetaLearner, StepStats
from maml_cli.core.outer import build_optimizer, build_scheduler, clip_meta_gradient
from maml_cli.core.tasks import TaskBatch

__all__ = [
    "AdaptScope",
    "AdaptationCurve",
    "BatchNormPolicy",
    "Engine",
    "InnerLearningRates",
    "InnerLoopConfig",
    "InnerOptimizer",
    "LrGranularity",
    "MetaLearner",
    "Method",
    "OptimizerConfig",
    "ScheduleSpan",
    "StepStats",
    "TaskBatch",
    "build_optimizer",
    "build_scheduler",
    "clip_meta_gradient",
]
