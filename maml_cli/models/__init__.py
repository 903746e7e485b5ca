"""Networks from the MAML literature; any other ``nn.Module`` works with the core just as well."""
from maml_cli.models.conv4 import Conv4, Pooling
from maml_cli.models.mlp import MLP

__all__ = ["Conv4", "MLP", "Pooling"]
