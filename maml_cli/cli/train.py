"""``maml-train``: meta-training from the composed config (see ``maml_cli.training``)."""
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from maml_cli.cli.app import hydra_command
from maml_cli.cli.schema import TrainConfig, validate
from maml_cli.training import RunInfo, train

# torchrun's processes other than rank 0: no .hydra/ files and no train.log of their own (rank 0's
# run dir is the job's; see ``training.trainer``), console logging only
FOLLOWER_OVERRIDES = {"hydra.output_subdir": "null", "hydra/job_logging": "stdout"}


@hydra_command("train")
def _main(cfg: DictConfig) -> float:
    """Returns the best validation score (accuracy, or −MSE), which sweepers such as Optuna maximise."""
    return train(validate(cfg, TrainConfig), run_info())


def main() -> float:
    if int(os.environ.get("RANK", "0")) > 0:
        given = {arg.split("=", 1)[0].lstrip("+~") for arg in sys.argv[1:]}
        sys.argv += [f"{key}={value}" for key, value in FOLLOWER_OVERRIDES.items() if key not in given]
    return _main()


def run_info() -> RunInfo:
    """This Hydra job's directory, W&B name (its overrides, seed excluded) and sweep."""
    hydra = HydraConfig.get()
    return RunInfo(
        output_dir=Path(hydra.runtime.output_dir),
        name=hydra.job.override_dirname or "defaults",
        sweep=Path(hydra.sweep.dir).name if hydra.mode is RunMode.MULTIRUN else None,
        overrides=list(hydra.overrides.task),
        choices={k: v for k, v in hydra.runtime.choices.items() if v is not None and not k.startswith("hydra/")},
    )
