"""Evaluation and deployment of trained checkpoints, and comparison of training runs."""

from maml_cli.evaluation.adapt import adapt_folders
from maml_cli.evaluation.compare import compare
from maml_cli.evaluation.evaluate import evaluate

__all__ = ["adapt_folders", "compare", "evaluate"]
