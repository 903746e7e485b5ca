"""One decorator turns a task function into a Hydra console command with friendly errors."""

from __future__ import annotations

import functools
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import maml_cli.cli.schema  # noqa: F401  (registers the schemas before Hydra composes)
from maml_cli.cli.config_tree import config_tree, show_config
from maml_cli.cli.jobs import line_prefix
from maml_cli.cli.paths import absolute_paths, exported_paths
from maml_cli.cli.rundir import torchrun_follower
from maml_cli.errors import MamlError
from maml_cli.performance import tune_allocator
from maml_cli.training.signals import Interrupted

log = logging.getLogger("maml_cli")


def hydra_command(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """``@hydra_command("train")`` on ``task(cfg)`` gives the ``main()`` of a console script.

    Before the task runs, relative paths in ``cfg`` become absolute against the directory the command
    started in (``maml_cli.cli.paths``), and the resolved config is shown as a tree and saved in the run
    directory (``maml_cli.cli.config_tree``).

    A :class:`MamlError` is reported as one line without a traceback: a single run exits with
    status 1; in a multirun the job fails (Hydra's sweepers carry on and report it). Training stopped
    by a signal (:class:`Interrupted`) or Ctrl-C is one line too, and exits with 128 + the signal
    number (130 Ctrl-C, 143 SIGTERM, 138 SIGUSR1), in a multirun as well; in a submitit job its
    preemption signal goes on to submitit, which requeues the job.
    """

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @functools.wraps(task)
        def run(cfg: DictConfig) -> Any:
            tune_allocator()  # every command: keep freed activation memory in-process (maml_cli.performance)
            job = HydraConfig.get()
            absolute_paths(cfg, Path(job.runtime.cwd))
            tree = config_tree(cfg, job.runtime.choices)
            if tree is not None and not torchrun_follower():
                show_config(tree, Path(job.runtime.output_dir), line_prefix())
            try:
                with exported_paths(cfg.paths):
                    return task(cfg)
            except MamlError as error:
                if HydraConfig.get().mode is RunMode.MULTIRUN:
                    log.error("%s", error)
                    raise
                error.exit()
            except Interrupted as stop:
                print(stop, file=sys.stderr)
                stop.hand_over()
                sys.exit(stop.exit_code)
            except KeyboardInterrupt:  # Ctrl-C outside the training loop
                print("SIGINT: stopped", file=sys.stderr)
                sys.exit(128 + signal.SIGINT)

        return hydra.main(version_base="1.3", config_path="pkg://maml_cli.conf", config_name=config_name)(run)

    return decorate
