"""Networks from the MAML literature; any other ``nn.Module`` works with the core just as well."""
from maml_cli.models.config import Conv4Config, MLPConfig, build_model
from maml_cli.models.conv4 import Conv4, Pooling
from maml_cli.models.mlp import MLP

__all__ = ["Conv4", "Conv4Config", "MLP", "MLPConfig", "Pooling", "build_model"]
