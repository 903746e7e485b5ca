"""What training and evaluation share about runs: checkpoint files, scores and W&B runs."""

from maml_cli.runs.checkpoints import FORMAT, atomic_write, load_checkpoint, save_checkpoint
from maml_cli.runs.metrics import mean_ci95, metric_name, score_episodes
from maml_cli.runs.tracking import open_run, run_identity, task_tag

__all__ = [
    "FORMAT",
    "atomic_write",
    "load_checkpoint",
    "mean_ci95",
    "metric_name",
    "open_run",
    "run_identity",
    "save_checkpoint",
    "score_episodes",
    "task_tag",
]
