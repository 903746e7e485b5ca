"""``maml-eval``: adaptation curves of a trained checkpoint (see ``maml_cli.evaluation``)."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from maml_cli.cli.app import hydra_command
from maml_cli.cli.schema import validate
from maml_cli.config import EvalConfig
from maml_cli.evaluation import evaluate


@hydra_command("eval")
def main(cfg: DictConfig) -> float:
    """Returns the final mean score (accuracy, or MSE for regression)."""
    report = evaluate(validate(cfg, EvalConfig), Path(HydraConfig.get().runtime.output_dir))
    return report["final"]["mean"]
