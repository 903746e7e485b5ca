"""``maml-adapt``: adapt a trained checkpoint on labelled image folders and classify new images."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from maml_cli.cli.app import hydra_command
from maml_cli.cli.schema import validate
from maml_cli.config import AdaptConfig
from maml_cli.evaluation import adapt_folders


@hydra_command("adapt")
def main(cfg: DictConfig) -> None:
    adapt_folders(validate(cfg, AdaptConfig), Path(HydraConfig.get().runtime.output_dir))
