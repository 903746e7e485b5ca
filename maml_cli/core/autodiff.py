"""Gradients of a function of named tensors: by ``torch.func`` under vmap, by ``torch.autograd`` otherwise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, func

Params = dict[str, Tensor]


def grad_and_value(
    fn: Callable[[Params], tuple[Tensor, Any]], inputs: Params, create_graph: bool, functional: bool
) -> tuple[Params, tuple[Tensor, Any]]:
    """``(∇ fn(inputs)[0], fn(inputs))`` for ``fn`` returning ``(loss, aux)``; zeros for unused inputs.

    Args:
        fn: A function of the named tensors: a scalar and anything else.
        inputs: The point.
        create_graph: Keep the graph of the gradient, to differentiate it again (``torch.autograd`` only: under
            ``torch.func`` higher orders are implicit).
        functional: By ``torch.func.grad_and_value`` (composes with vmap), else by ``torch.autograd.grad``
            (less overhead per call).

    Returns:
        The gradients by name, and ``fn``'s value and aux.
    """
    if functional:
        result: tuple[Params, tuple[Tensor, Any]] = func.grad_and_value(fn, has_aux=True)(inputs)
        return result
    variables = inputs if create_graph else {n: t.detach().requires_grad_() for n, t in inputs.items()}
    with torch.enable_grad():
        value, aux = fn(variables)
        grads = torch.autograd.grad(
            value, tuple(variables.values()), create_graph=create_graph, allow_unused=True, materialize_grads=True
        )
    return dict(zip(variables, grads)), (value, aux)


def hessian_vector_product(
    fn: Callable[[Params], tuple[Tensor, Any]], inputs: Params, functional: bool
) -> Callable[[Params], Params]:
    """``v ↦ ∇²fn(inputs)[0] · v``, the gradient's graph built once and differentiated again for every ``v``.

    Args:
        fn: A function of the named tensors: a scalar and anything else (the aux is dropped).
        inputs: The point.
        functional: By ``torch.func.vjp`` of ``torch.func.grad`` (composes with vmap), else by
            ``torch.autograd.grad`` on a kept graph.

    Returns:
        The Hessian-vector product by name (the Hessian is symmetric, so this is also ``v``'s vector-Jacobian
        product with the gradient).
    """
    if functional:
        vjp_fn = func.vjp(lambda sub: func.grad(fn, has_aux=True)(sub)[0], inputs)[1]
        return lambda v: vjp_fn(v)[0]
    variables = {n: t.detach().requires_grad_() for n, t in inputs.items()}
    gradient, _ = grad_and_value(fn, variables, True, False)

    def product(v: Params) -> Params:
        hv = torch.autograd.grad(
            tuple(gradient.values()),
            tuple(variables.values()),
            grad_outputs=tuple(v[n] for n in gradient),
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        return dict(zip(variables, hv))

    return product
