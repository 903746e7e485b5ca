"""The convolution floor counts a step's convolution work exactly, forward and backward."""

import torch
import torch.nn.functional as F

from benchmarks.floor import convolution_floor, convolution_gflops, step_gflop

N, C_IN, C_OUT, SIZE = 4, 3, 8, 10
FORWARD_FLOP = 2 * N * C_OUT * C_IN * 3 * 3 * SIZE * SIZE  # one multiply-add per weight and output pixel


def test_a_convolution_counts_its_multiply_adds_and_its_backward_twice_as_many():
    x = torch.randn(N, C_IN, SIZE, SIZE, requires_grad=True)
    w = torch.randn(C_OUT, C_IN, 3, 3, requires_grad=True)
    assert step_gflop(lambda: F.conv2d(x, w, padding=1)) * 1e9 == FORWARD_FLOP
    # backward: the input's gradient and the weight's, each as much work as the forward pass
    assert step_gflop(lambda: F.conv2d(x, w, padding=1).sum().backward()) * 1e9 == 3 * FORWARD_FLOP


def test_the_floor_is_the_work_at_the_calibrated_rate():
    x, w = torch.randn(N, C_IN, SIZE, SIZE), torch.randn(C_OUT, C_IN, 3, 3)
    floor = convolution_floor(lambda: F.conv2d(x, w, padding=1), median_s=1.0, threads=1)
    assert floor["convolution_gflops"] == convolution_gflops(1) > 0
    assert floor["floor_s"] == floor["gflop"] / floor["convolution_gflops"]
    assert floor["over_floor"] == 1.0 / floor["floor_s"]
