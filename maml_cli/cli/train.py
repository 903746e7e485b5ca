"""``maml-train``: meta-training from the composed config."""
from omegaconf import DictConfig

from maml_cli.cli.app import hydra_command
from maml_cli.cli.schema import TrainConfig, validate


@hydra_command("train")
def main(cfg: DictConfig) -> float | None:
    config = validate(cfg, TrainConfig)
    print(config)
