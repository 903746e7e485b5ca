"""The MAML paper's four-block convolutional network."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maml_cli.errors import MamlError


class Pooling(str, Enum):
    stride = "stride"  # stride-2 convolutions, spatial mean at the end (MAML's Omniglot network)
    max = "max"  # stride-1 convolutions + 2×2 max-pooling, flattened (MAML's mini-ImageNet network)


class Conv4(nn.Module):
    """4 × [conv 3×3 → BatchNorm → ReLU (→ max-pool)] → linear ``head``.

    Omniglot (Finn et al. 2017): 64 filters, ``pooling="stride"``. mini-ImageNet: 32 filters,
    ``pooling="max"``. BatchNorm uses batch statistics unless ``track_running_stats`` is set
    (needed by the ``per_step`` BatchNorm policy).
    """

    def __init__(
        self,
        out_features: int,
        in_channels: int = 1,
        hidden: int = 64,
        image_size: int = 28,
        pooling: Pooling | str = Pooling.stride,
        track_running_stats: bool = False,
    ) -> None:
        super().__init__()
        self.pooling = Pooling(pooling)
        blocks, channels, size = [], in_channels, image_size
        for _ in range(4):
            stride = 2 if self.pooling is Pooling.stride else 1
            block = [
                nn.Conv2d(channels, hidden, 3, stride=stride, padding=1),
                nn.BatchNorm2d(hidden, track_running_stats=track_running_stats),
                nn.ReLU(inplace=True),
            ]
            if self.pooling is Pooling.max:
                block.append(nn.MaxPool2d(2))
                size //= 2
            else:
                size = (size + 1) // 2
            blocks.append(nn.Sequential(*block))
            channels = hidden
        self.features = nn.Sequential(*blocks)
        features = hidden if self.pooling is Pooling.stride else hidden * size * size
        self.head = nn.Linear(features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        """The same function as ``self.head(flatten(self.features(x)))``, computed faster.

        * max-pool before ReLU: ``max_pool(relu(h)) == relu(max_pool(h))`` (ReLU is monotonic), in
          value and in gradient, so ReLU runs on a quarter of the elements;
        * on CPU, the first block's convolution and BatchNorm (batch statistics) are one matrix product
          of the input's patches with per-batch folded weights (``_conv_bn_folded``): the largest
          activation of the network is produced once, never normalised in a second pass, and comes out
          channels-last, so the rest of the network runs channels-last (oneDNN convolutions and
          max-pooling vectorise over the channels; NCHW max-pooling is ~3× slower on CPU); with
          max-pooling, that product is pooled a few images at a time (``_MatmulMaxPool2x2``), so the
          largest activation and its gradient never exist whole;
        * on CPU, max-pooling keeps only its indices for the backward pass (``_MaxPool2x2``), not its input
          (a quarter less activation memory per task).
        """
        cpu = x.device.type == "cpu"
        pool = self.pooling is Pooling.max
        h = x
        for index, block in enumerate(self.features):
            conv, bn = block[0], block[1]
            if cpu and index == 0 and _foldable(conv, bn, x):
                h = _conv_bn_folded(h, conv, bn, pool)
            else:
                h = bn(conv(h))
                if pool:
                    h = _MaxPool2x2.apply(h)[0] if cpu else F.max_pool2d(h, 2)
            h = F.relu(h)
        h = h.mean((-2, -1)) if self.pooling is Pooling.stride else torch.flatten(h, 1)
        return self.head(h)


@dataclass
class Conv4Config:
    """``model=conv4``: the MAML paper's Omniglot network (64 filters, stride-2 convolutions, spatial mean)."""

    name: str = "conv4"
    hidden: int = 64
    pooling: Pooling = Pooling.stride


def build_conv4(
    cfg: Conv4Config, input_shape: tuple[int, ...], out_features: int, track_running_stats: bool = False
) -> Conv4:
    """A ``Conv4`` for square images of ``input_shape`` (C, H, W)."""
    if len(input_shape) != 3:
        raise MamlError(f"model=conv4 needs image inputs (C, H, W), but the dataset gives {tuple(input_shape)}")
    channels, size, _ = input_shape
    return Conv4(out_features, channels, cfg.hidden, size, cfg.pooling, track_running_stats)


def _foldable(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: Tensor) -> bool:
    """Batch statistics always (no running statistics), and small patches: the patch matrix
    (``C_in·k·k`` columns) is no wider than half the output (``C_out`` columns) — first layers."""
    patch = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    return (
        x.dim() == 4
        and bn.running_mean is None
        and bn.affine
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and 2 * patch <= conv.out_channels
    )


def _conv_bn_folded(x: Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, pool: bool = False) -> Tensor:
    """``bn(conv(x))`` with batch statistics, as one matrix product, channels-last (then 2×2
    max-pooled if ``pool``).

    With ``P`` the matrix of the patches of ``x`` (one row per output pixel), ``conv(x)[:, c] = P w_c + b_c``.
    The batch mean of channel ``c`` is ``μ·w_c + b_c`` and its (biased) variance ``w_cᵀ Σ w_c``, ``μ`` and
    ``Σ`` being the mean and covariance of the rows of ``P``. So BatchNorm's output is ``P (w_c s_c) +
    β_c − (μ·w_c) s_c`` with ``s_c = γ_c / sqrt(var_c + ε)``: exact (float64 agrees to 1e-14), and
    differentiable to any order by autograd.
    """
    weight = conv.weight.reshape(conv.out_channels, -1)
    k = weight.shape[1]
    # The patches as k channels, plus a channel of ones that carries the bias through the same product.
    extract = torch.eye(k + 1, k, dtype=x.dtype, device=x.device).view(k + 1, *conv.weight.shape[1:])
    ones = torch.zeros(k + 1, dtype=x.dtype, device=x.device)
    ones[k] = 1
    patches = F.conv2d(x, extract, ones, conv.stride, conv.padding, conv.dilation)  # [N, k+1, H', W']
    height, width = patches.shape[-2:]
    patches = patches.permute(0, 2, 3, 1).reshape(-1, k + 1)
    mean = patches[:, :k].mean(0)
    centred = patches[:, :k] - mean
    variance = ((weight @ (centred.T @ centred)) * weight).sum(1) / patches.shape[0]
    scale = bn.weight * torch.rsqrt(variance + bn.eps)
    bias = bn.bias - (weight @ mean) * scale  # the convolution's own bias cancels, as in BatchNorm
    if conv.bias is not None:
        bias = bias + 0 * conv.bias  # kept in the graph: its gradient is exactly zero, as it should be
    folded = torch.cat([weight * scale[:, None], bias[:, None]], 1)
    if pool:
        return _MatmulMaxPool2x2.apply(patches, folded, height, width)[0]
    return _images(patches @ folded.T, height, width)  # one GEMM writes the output once


def _images(rows: Tensor, height: int, width: int) -> Tensor:
    """Rows (one per pixel, image by image) as [images, channels, height, width], channels-last."""
    return rows.view(-1, height, width, rows.shape[-1]).permute(0, 3, 1, 2)


class _MatmulMaxPool2x2(torch.autograd.Function):
    """``max_pool2d(_images(rows @ weight.T), 2, return_indices=True)``, computed ``_chunk`` images at a time.

    The product is the network's largest activation (and its gradient the backward pass's largest
    tensor): here only a chunk of it exists at once. Saves the rows, the weight and the pooling's
    indices; the backward pass unpools and multiplies chunk by chunk with differentiable operations, so
    it is differentiable again (second-order MAML), and ``torch.func`` transforms it.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(rows: Tensor, weight: Tensor, height: int, width: int):
        chunks = [
            F.max_pool2d(_images(r @ weight.T, height, width), 2, return_indices=True)
            for r in rows.split(_chunk(weight.shape[0], height, width) * height * width)
        ]
        return chunks[0] if len(chunks) == 1 else tuple(torch.cat(parts) for parts in zip(*chunks))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        rows, weight, height, width = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(rows, weight, output[1])
        ctx.size = (height, width)

    @staticmethod
    def backward(ctx, grad: Tensor, _):
        rows, weight, indices = ctx.saved_tensors
        images = _chunk(weight.shape[0], *ctx.size)
        grad_rows, grad_weights = [], []
        for g, i, r in zip(grad.split(images), indices.split(images), rows.split(images * ctx.size[0] * ctx.size[1])):
            dense = _MaxUnpool2x2.apply(g, i, ctx.size).permute(0, 2, 3, 1).reshape(r.shape[0], -1)
            grad_weights.append(dense.T @ r)
            if ctx.needs_input_grad[0]:
                grad_rows.append(dense @ weight)
        return torch.cat(grad_rows) if grad_rows else None, sum(grad_weights[1:], grad_weights[0]), None, None


_CHUNK_BYTES = 4 * 2**20


def _chunk(channels: int, height: int, width: int) -> int:
    """Images per chunk of ``_MatmulMaxPool2x2``: about ``_CHUNK_BYTES`` of float32 activations."""
    return max(1, _CHUNK_BYTES // (4 * channels * height * width))


class _MaxPool2x2(torch.autograd.Function):
    """``max_pool2d(x, 2, return_indices=True)`` whose backward pass needs only the indices (``max_unpool2d``).

    Native max-pooling also keeps its whole input alive until the backward pass (for its shape);
    this saves that memory. Differentiable to any order, and composable with ``torch.func``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return F.max_pool2d(x, 2, return_indices=True)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
        ctx.size = inputs[0].shape[-2:]

    @staticmethod
    def backward(ctx, grad: Tensor, _) -> Tensor:
        (indices,) = ctx.saved_tensors
        return _MaxUnpool2x2.apply(grad, indices, ctx.size)


class _MaxUnpool2x2(torch.autograd.Function):
    """``max_unpool2d(grad, indices, 2)``: the pooling's backward, itself differentiable (its derivative
    gathers at the indices again), with a vmap rule (tasks folded into the batch dimension)."""

    @staticmethod
    def forward(grad: Tensor, indices: Tensor, size) -> Tensor:
        return F.max_unpool2d(grad, indices, 2, output_size=size)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1])

    @staticmethod
    def backward(ctx, grad_grad: Tensor):
        (indices,) = ctx.saved_tensors
        return grad_grad.flatten(-2).gather(-1, indices.flatten(-2)).view(indices.shape), None, None

    @staticmethod
    def vmap(info, in_dims, grad: Tensor, indices: Tensor, size):
        def batched(t: Tensor, dim) -> Tensor:
            return t.movedim(dim, 0) if dim is not None else t.expand(info.batch_size, *t.shape)

        out = _MaxUnpool2x2.apply(
            batched(grad, in_dims[0]).flatten(0, 1), batched(indices, in_dims[1]).flatten(0, 1), size
        )
        return out.unflatten(0, (info.batch_size, -1)), 0
