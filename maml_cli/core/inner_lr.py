"""Inner-loop learning rates α: fixed or learned, scalar / per layer / per element, shared or per step."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from maml_cli.core.config import LrGranularity


def _key(name: str) -> str:
    return name.replace(".", "__")


class InnerLearningRates(nn.Module):
    """Holds α for each adapted parameter; ``forward(step, name)`` returns the rate to use.

    Rates are ``nn.Parameter``s, trainable only when ``learn`` is set, so that they are saved with
    the model and can be passed to ``torch.func.functional_call`` like any other parameter.
    Steps past the last per-step set (evaluation with more steps than training) reuse the last set.
    """

    def __init__(
        self,
        params: dict[str, Tensor],
        init: float,
        steps: int,
        granularity: LrGranularity = LrGranularity.scalar,
        per_step: bool = False,
        learn: bool = False,
    ) -> None:
        super().__init__()
        self.granularity = LrGranularity(granularity)
        sets = max(steps, 1) if per_step else 1

        def rate(param: Tensor) -> nn.Parameter:
            shape = param.shape if self.granularity is LrGranularity.per_element else ()
            return nn.Parameter(torch.full(shape, float(init), dtype=param.dtype), requires_grad=learn)

        if self.granularity is LrGranularity.scalar:
            template = next(iter(params.values()))
            self.rates = nn.ParameterList([rate(template) for _ in range(sets)])
        else:
            self.rates = nn.ModuleList(
                nn.ParameterDict({_key(n): rate(p) for n, p in params.items()}) for _ in range(sets)
            )

    def lookup(self, tensors: dict[str, Tensor], step: int, name: str) -> Tensor:
        """α for parameter ``name`` at ``step``, read from ``tensors`` (this module's parameters, by name).

        A pure function of ``tensors``, so that learned rates can be differentiated functionally.
        """
        index = min(step, len(self.rates) - 1)
        if self.granularity is LrGranularity.scalar:
            return tensors[f"rates.{index}"]
        return tensors[f"rates.{index}.{_key(name)}"]

    def forward(self, step: int, name: str) -> Tensor:
        return self.lookup(dict(self.named_parameters()), step, name)
