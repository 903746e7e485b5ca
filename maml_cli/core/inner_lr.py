"""Inner-loop learning rates α: fixed or learned, scalar / per layer / per element, shared or per step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from maml_cli.core.config import LrGranularity


class InnerLearningRates(nn.Module):
    """Holds α for each adapted parameter; called as ``inner_lr(step, name)``, it gives the rate in use now.

    Rates are ``nn.Parameter``s, trainable only when ``learn`` is set, so that they are saved with
    the learner and can be passed to ``torch.func`` transforms like any other parameter. Steps past
    the last per-step set (evaluation with more steps than training) reuse the last set.

    Args:
        params: The adapted parameters, by name.
        init: The initial (or fixed) rate.
        steps: The number of inner steps (the number of sets when ``per_step``).
        granularity: One rate for all parameters, one per parameter tensor, or one per element.
        per_step: A set of rates for each inner step, instead of one shared set.
        learn: Whether the rates are meta-learned.
        init_range: ``[low, high]``: each rate starts drawn uniformly from it (from torch's global generator),
            not at ``init`` (Meta-SGD: ``[0.005, 0.1]``).
    """

    def __init__(
        self,
        params: Mapping[str, Tensor],
        init: float,
        steps: int,
        granularity: LrGranularity = LrGranularity.scalar,
        per_step: bool = False,
        learn: bool = False,
        init_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.granularity = LrGranularity(granularity)

        def rate(param: Tensor) -> nn.Parameter:
            shape = param.shape if self.granularity is LrGranularity.per_element else ()
            value = torch.full(shape, float(init), dtype=param.dtype)
            if init_range is not None:
                value.uniform_(float(init_range[0]), float(init_range[1]))
            return nn.Parameter(value, requires_grad=learn)

        def one_set() -> dict[str, nn.Parameter]:
            """A rate for each adapted parameter (one shared by all of them when scalar)."""
            if self.granularity is LrGranularity.scalar:
                return dict.fromkeys(params, rate(next(iter(params.values()))))
            return {n: rate(p) for n, p in params.items()}

        sets = [one_set() for _ in range(max(steps, 1) if per_step else 1)]
        # Stored as one parameter per set (scalar) or a dict of them per set, keyed by parameter name ("__" for ".").
        self.rates: nn.ParameterList | nn.ModuleList
        if self.granularity is LrGranularity.scalar:
            self.rates = nn.ParameterList([next(iter(s.values())) for s in sets])
        else:
            self.rates = nn.ModuleList(nn.ParameterDict({n.replace(".", "__"): p for n, p in s.items()}) for s in sets)
        key = {id(p): name for name, p in self.named_parameters()}
        self.keys = [{n: key[id(p)] for n, p in s.items()} for s in sets]  # (set, parameter) -> rate's name here

    def rate(self, rates: dict[str, Tensor], step: int, name: str) -> Tensor:
        """α of the adapted parameter ``name`` at inner step ``step``, taken from ``rates``.

        Args:
            rates: This module's parameters by name (as ``named_parameters`` gives them), or stand-ins for
                them, so that functional transforms can differentiate through the rates.
            step: The inner step (0-based).
            name: The parameter's name in the model.

        Returns:
            The rate: a scalar, or a tensor of the parameter's shape (``per_element``).
        """
        return rates[self.keys[min(step, len(self.keys) - 1)][name]]

    def forward(self, step: int, name: str) -> Tensor:
        """The rate in use now: α of parameter ``name`` at inner step ``step`` (see ``rate``)."""
        return self.rate(dict(self.named_parameters()), step, name)
