"""Meta-training: the loop, checkpoints, W&B tracking and progress reporting."""
from maml_cli.training.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from maml_cli.training.metrics import mean_ci95, score_episodes
from maml_cli.training.tracking import RunInfo
from maml_cli.training.trainer import train

__all__ = ["FORMAT", "RunInfo", "load_checkpoint", "mean_ci95", "save_checkpoint", "score_episodes", "train"]
