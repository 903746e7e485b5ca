"""Meta-training: the loop, its run directory and W&B run, exact resume, signals and progress reporting."""

from maml_cli.training.trainer import train
from maml_cli.training.writer import RunInfo

__all__ = ["RunInfo", "train"]
