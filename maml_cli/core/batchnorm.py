"""Per-step BatchNorm: running statistics (a copy of the model's buffers) and weights for each inner step."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from maml_cli.errors import MamlError

Buffers = dict[str, Tensor]
Params = dict[str, Tensor]


def batchnorm_weight_names(model: nn.Module) -> list[str]:
    """The names of the trainable weights and biases (γ, β) of ``model``'s BatchNorm layers."""
    return [
        f"{prefix}.{name}" if prefix else name
        for prefix, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for name, p in module.named_parameters(recurse=False)
        if p.requires_grad
    ]


class StepWeights(nn.Module):
    """MAML++'s per-step BatchNorm weights and biases (BNWB), meta-learned, one set per inner step.

    The model's own γ and β serve step 0; this holds a copy of them for each further step (none for
    one step). Every forward pass belongs to an inner step: a support pass to the step it computes
    the gradient of, a query pass to the step whose update it scores (the MAML++ code's ``num_step``,
    so the query after the last update uses the last set). Steps past the last set (evaluation with
    more steps than training) reuse it.

    Args:
        model: The model; its BatchNorm layers' weights and biases are copied.
        steps: The number of inner steps, and so of sets (0 for none: the model's own serve every step).
    """

    def __init__(self, model: nn.Module, steps: int) -> None:
        super().__init__()
        self.names = batchnorm_weight_names(model) if steps else []
        params = dict(model.named_parameters())
        self.sets = nn.ModuleList(
            nn.ParameterDict({n.replace(".", "__"): nn.Parameter(params[n].detach().clone()) for n in self.names})
            for _ in range(steps - 1)
        )

    def select(self, params: Params, weights: Params, step: int) -> Params:
        """``params`` with the BatchNorm weights and biases of inner step ``step``.

        Args:
            params: The model's parameters (or stand-ins for them), by name.
            weights: This module's parameters by name (as ``named_parameters`` gives them), or stand-ins.
            step: The inner step (0-based; clamped to the sets there are).

        Returns:
            ``params``, itself at step 0, else a copy with the step's weights and biases.
        """
        step = min(step, len(self.sets))
        if step <= 0:
            return params
        return {**params, **{n: weights[f"sets.{step - 1}.{n.replace('.', '__')}"] for n in self.names}}


class StepBuffers(nn.ModuleList):
    """One set of the model's buffers for each of ``sets`` inner steps; empty when ``sets`` is 0.

    Set ``s`` holds the running statistics used at inner step ``s`` (the last set: the query pass); they
    are the mean over the tasks of a meta-batch of each task's update (``store``), and evaluation in
    eval mode uses them.

    Args:
        model: The model whose buffers are copied; with ``sets``, it needs BatchNorm layers that track
            running statistics.
        sets: How many sets to keep.
    """

    def __init__(self, model: nn.Module, sets: int) -> None:
        super().__init__()
        if sets and not any(getattr(m, "track_running_stats", False) for m in model.modules()):
            raise MamlError("batchnorm=per_step needs BatchNorm layers with track_running_stats=True")
        self.extend(_BufferSet(dict(model.named_buffers())) for _ in range(sets))

    def as_dicts(self) -> list[Buffers]:
        """Each set's buffers by the model's buffer names (the stored tensors themselves)."""
        return [buffer_set.as_dict() for buffer_set in self._sets()]

    @torch.no_grad()
    def store(self, updated: list[Buffers]) -> None:
        """Set each set to the mean over tasks of the tasks' updated buffers.

        Args:
            updated: For each set, the tasks' buffers (tasks along dim 0). Floating-point ones are
                averaged in at least float32 (half-precision buffers; float64 is kept), counters are
                taken from the first task (they are equal).
        """
        for stored, buffers in zip(self._sets(), updated):
            for name, t in buffers.items():
                if t.is_floating_point():
                    stored.get(name).copy_(t.mean(0, dtype=torch.promote_types(t.dtype, torch.float32)))
                else:
                    stored.get(name).copy_(t[0])

    def _sets(self) -> list[_BufferSet]:
        return [cast(_BufferSet, module) for module in self]


class _BufferSet(nn.Module):
    """A copy of a model's buffers (one inner step's BatchNorm statistics)."""

    def __init__(self, buffers: Buffers) -> None:
        super().__init__()
        self.names = list(buffers)
        for name, t in buffers.items():
            self.register_buffer(name.replace(".", "__"), t.detach().clone())

    def get(self, name: str) -> Tensor:
        """The stored buffer of the model's buffer ``name``."""
        return cast(Tensor, getattr(self, name.replace(".", "__")))

    def as_dict(self) -> Buffers:
        """The stored buffers by the model's buffer names."""
        return {n: self.get(n) for n in self.names}
