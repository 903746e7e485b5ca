"""Hydra's view of the run settings: the schemas in its ConfigStore, and validation before any work.

The commands' and the datasets' schemas live in the group ``schema`` (out of the selectable groups),
under the YAML files that choose them; each model's dataclass is itself the option ``model=NAME``.
``validate`` rejects keys that no schema defines, then builds the dataclasses, which runs every range
and cross-field check; ``composed`` does both for a command's overrides, in-process (no Hydra app).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Iterator
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from maml_cli.config import AdaptConfig, EvalConfig, TrainConfig, with_task_shape
from maml_cli.data import DATASETS
from maml_cli.errors import MamlError
from maml_cli.models import MODELS

SCHEMAS = {"train": TrainConfig, "eval": EvalConfig, "adapt": AdaptConfig}


def composed(command: str, overrides: Iterable[str] = ()) -> Any:
    """The validated config that ``maml-<command> *overrides`` would run (``command``: train, eval or adapt)."""
    with initialize_config_module(config_module="maml_cli.conf", version_base="1.3"):
        return validate(compose(config_name=command, overrides=list(overrides)), SCHEMAS[command])


def validate(cfg: DictConfig, schema: type) -> Any:
    """The config as schema objects, after the key, range and cross-field checks (raises MamlError)."""
    if OmegaConf.get_type(cfg) is not schema:
        raise MamlError(f"expected a {schema.__name__} config")
    reject_unknown_keys(cfg)
    try:
        return OmegaConf.to_object(cfg)
    except MamlError:
        raise
    except Exception as error:  # omegaconf wraps __post_init__ errors and reports missing values
        cause = error.__cause__ if isinstance(error.__cause__, MamlError) else error
        raise MamlError(str(cause).splitlines()[0]) from None


def reject_unknown_keys(cfg: DictConfig) -> None:
    """Raise MamlError naming each key that no schema defines (``+key=value`` appends even to a schema)."""
    keys = list(_keys(cfg))
    known = [key for key, defined in keys if defined]
    unknown = [key for key, defined in keys if not defined]
    if unknown:
        raise MamlError("\n".join(_no_such_setting(key, known) for key in unknown))


def _keys(cfg: DictConfig, prefix: str = "") -> Iterator[tuple[str, bool]]:
    """Each dotted key of ``cfg``, and whether its node's dataclass defines it (nothing below an undefined one)."""
    schema = OmegaConf.get_type(cfg)
    fields = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key, value in cfg.items_ex(resolve=False):  # unresolved: no interpolation or missing value is read
        defined = fields is None or key in fields
        yield f"{prefix}{key}", defined
        if defined and isinstance(value, DictConfig):
            yield from _keys(value, f"{prefix}{key}.")


def _no_such_setting(key: str, known: list[str]) -> str:
    """The error for one unknown key: close names beside it, else close names anywhere, else those beside it."""
    parent, _, name = key.rpartition(".")
    siblings = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent]
    close = [f"{parent}.{s}" if parent else s for s in difflib.get_close_matches(name, siblings, n=3)]
    if not close:
        names = difflib.get_close_matches(name, {k.rpartition(".")[2] for k in known}, n=3)
        close = [k for k in known if k.rpartition(".")[2] in names][:3]
    if close:
        return f"+{key}: no such setting; did you mean {' or '.join(close)}?"
    return f"+{key}: no such setting; the settings {f'of {parent} ' if parent else ''}are: {', '.join(siblings)}"


def register() -> None:
    """Store the schemas in Hydra's ConfigStore, and each model of ``MODELS`` as the option ``model=NAME``."""
    store = ConfigStore.instance()
    store.store(group="schema", name="train", node=TrainConfig)
    store.store(group="schema", name="eval", node=EvalConfig)
    store.store(group="schema", name="adapt", node=AdaptConfig)
    for name, dataset in DATASETS.items():
        store.store(group="schema/dataset", name=name, node=with_task_shape(dataset.config))
    for name, model in MODELS.items():
        store.store(group="model", name=name, node=model.config)


register()
