"""``maml-train``: meta-training from the composed config (see ``maml_cli.training``)."""

import dataclasses
import logging
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from maml_cli.cli.app import hydra_command
from maml_cli.cli.schema import TrainConfig, validate
from maml_cli.runtime import resolve_device
from maml_cli.training import RunInfo, train
from maml_cli.training.distributed import Distributed, init_distributed

# torchrun's processes other than rank 0: no .hydra/ files and no train.log of their own (rank 0's
# run dir is the job's; see ``_shared_output_dir``), console logging only
FOLLOWER_OVERRIDES = {"hydra.output_subdir": "null", "hydra/job_logging": "stdout"}


@hydra_command("train")
def _main(cfg: DictConfig) -> float:
    """Returns the best validation score (accuracy, or −MSE), which sweepers such as Optuna maximise."""
    config = validate(cfg, TrainConfig)
    dist = init_distributed(resolve_device(config.device), config.dist_timeout_s)
    return train(config, _shared_output_dir(dist, run_info(config)), dist)


def main() -> float:
    if int(os.environ.get("RANK", "0")) > 0:
        given = {arg.split("=", 1)[0].lstrip("+~") for arg in sys.argv[1:]}
        sys.argv += [f"{key}={value}" for key, value in FOLLOWER_OVERRIDES.items() if key not in given]
    return _main()


def run_info(config: TrainConfig) -> RunInfo:
    """This Hydra job's directory, overrides, group choices, the keys left out of run names
    (``hydra.job.config.override_dirname.exclude_keys``) and, in a multirun, the sweep's W&B group."""
    hydra = HydraConfig.get()
    choices = {k: v for k, v in hydra.runtime.choices.items() if v is not None and not k.startswith("hydra/")}
    return RunInfo(
        output_dir=Path(hydra.runtime.output_dir),
        sweep=sweep_group(hydra, choices, config) if hydra.mode is RunMode.MULTIRUN else None,
        overrides=list(hydra.overrides.task),
        choices=choices,
        unnamed=list(hydra.job.config.override_dirname.exclude_keys),
    )


def sweep_group(hydra, choices: dict[str, str], config: TrainConfig) -> str:
    """The W&B group of a multirun's jobs: the name of the sweep directory given as ``hydra.sweep.dir``, else
    the sweep preset's or experiment's name (else ``multirun``) and the default directory's (its time). A
    sweep over experiments (or names) is one group too: ``multirun``, not each job's own name."""
    directory = Path(hydra.sweep.dir).name
    if any(override.split("=", 1)[0] == "hydra.sweep.dir" for override in hydra.overrides.hydra):
        return directory
    name = None if sweeps(Path(hydra.runtime.cwd, hydra.sweep.dir), ("experiment", "name")) else config.name
    return f"{choices.get('sweep') or name or 'multirun'}-{directory}"


def sweeps(sweep_dir: Path, keys: tuple[str, ...]) -> bool:
    """Whether the multirun's command line sweeps one of ``keys``, by its ``multirun.yaml`` (which Hydra's basic
    sweeper writes before the jobs start; without it, False)."""
    saved = sweep_dir / "multirun.yaml"
    if not saved.is_file():
        return False
    overrides = OverridesParser.create().parse_overrides(list(OmegaConf.load(saved).hydra.overrides.task))
    return any(o.key_or_group in keys and o.is_sweep_override() for o in overrides)


def _shared_output_dir(dist: Distributed, info: RunInfo) -> RunInfo:
    """Under torchrun, rank 0's output directory on every rank (Hydra's ``${now:...}`` may differ by a second
    between them).

    Other ranks log warnings and errors only; the empty directory their Hydra made is removed.
    """
    if not dist.enabled:
        return info
    shared = Path(dist.broadcast_object(str(info.output_dir.resolve())))
    if not dist.is_main:
        for name in ("", "maml_cli"):  # the root logger (Hydra's, submitit's lines) and ours
            logging.getLogger(name).setLevel(logging.WARNING)
        own = info.output_dir.resolve()
        if own != shared and own.is_dir() and not any(own.iterdir()):
            own.rmdir()
    return dataclasses.replace(info, output_dir=shared)
