"""Networks from the MAML literature; any other ``nn.Module`` works with the core just as well.

``MODELS`` is the one registry of the ``model`` config group: each name's settings (a dataclass, also
Hydra's node for ``model=NAME``) and its builder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from torch import nn

from maml_cli.errors import MamlError
from maml_cli.models.conv4 import Conv4, Conv4Config, Pooling, build_conv4
from maml_cli.models.mlp import MLP, MLPConfig, build_mlp


class Model(NamedTuple):
    """A ``model=`` option: its settings and ``build(cfg, input_shape, out_features, track_running_stats)``."""

    config: type
    build: Callable[..., nn.Module]


MODELS: dict[str, Model] = {m.config.name: m for m in (Model(Conv4Config, build_conv4), Model(MLPConfig, build_mlp))}


def build_model(
    cfg: Any, input_shape: tuple[int, ...], out_features: int, track_running_stats: bool = False
) -> nn.Module:
    """The network named by ``cfg.name`` for inputs of ``input_shape`` and ``out_features`` outputs."""
    if cfg.name not in MODELS:
        raise MamlError(f"model.name={cfg.name!r} is not known; choose one of: {', '.join(MODELS)}")
    return MODELS[cfg.name].build(cfg, input_shape, out_features, track_running_stats)


__all__ = ["MLP", "MODELS", "Conv4", "Conv4Config", "MLPConfig", "Model", "Pooling", "build_model"]
