"""Hydra's view of the run settings: the schemas in its ConfigStore, and validation before any work.

Schemas live in the group ``schema`` (out of the selectable groups), so ``dataset=`` lists only
real datasets. ``validate`` builds the dataclasses, which runs every range and cross-field check.
"""
from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from maml_cli.config import DATASETS, MODELS, AdaptConfig, EvalConfig, TrainConfig, with_task_shape
from maml_cli.errors import MamlError


def validate(cfg: DictConfig, schema: type) -> Any:
    """The config as schema objects, after every range and cross-field check (raises MamlError)."""
    if OmegaConf.get_type(cfg) is not schema:
        raise MamlError(f"expected a {schema.__name__} config")
    try:
        return OmegaConf.to_object(cfg)
    except MamlError:
        raise
    except Exception as error:  # omegaconf wraps __post_init__ errors and reports missing values
        cause = error.__cause__ if isinstance(error.__cause__, MamlError) else error
        raise MamlError(str(cause).splitlines()[0]) from None


def register() -> None:
    """Store the schemas in Hydra's ConfigStore (group ``schema``, out of the selectable groups)."""
    store = ConfigStore.instance()
    store.store(group="schema", name="train", node=TrainConfig)
    store.store(group="schema", name="eval", node=EvalConfig)
    store.store(group="schema", name="adapt", node=AdaptConfig)
    for name, config in DATASETS.items():
        store.store(group="schema/dataset", name=name, node=with_task_shape(config))
    for name, config in MODELS.items():
        store.store(group="schema/model", name=name, node=config)


register()
