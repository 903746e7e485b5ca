"""The convolution floor of a step: its counted convolution and matrix-product work at this CPU's convolution rate.

A step of Conv4 meta-training is convolutions (forward, backward, and the double backward of second order)
plus everything else; the floor is the time the convolutions alone would take at the best rate this CPU's
oneDNN reaches on Conv4's layers, so a step's ``over_floor`` says how much of it is anything but that work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

CALIBRATION_SHAPES = ((64, 28), (256, 14), (1024, 7))  # (images, pixels a side): Omniglot's feature maps, large batches


def step_gflop(step: Callable[[], None]) -> float:
    """The convolution and matrix-product work of one call of ``step``, in GFLOP (``FlopCounterMode``'s count,
    backward and double backward included)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / 1e9


@cache
def convolution_gflops(threads: int, repeats: int = 10) -> float:
    """This CPU's convolution rate on ``threads`` threads, GFLOP/s: the best of oneDNN's forward 3x3 64-to-64
    convolutions (channels-last, float32) over ``CALIBRATION_SHAPES``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rates = []
        weight = torch.randn(64, 64, 3, 3)
        for batch, size in CALIBRATION_SHAPES:
            x = torch.randn(batch, 64, size, size).to(memory_format=torch.channels_last)
            F.conv2d(x, weight, padding=1)  # oneDNN's primitive is created once
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                F.conv2d(x, weight, padding=1)
                best = min(best, time.perf_counter() - t0)
            rates.append(2 * batch * 64 * 64 * 9 * size * size / best / 1e9)
        return max(rates)
    finally:
        torch.set_num_threads(previous)


def convolution_floor(step: Callable[[], None], median_s: float, threads: int) -> dict:
    """The floor of ``step`` (a per-task step: ``FlopCounterMode`` follows one thread) and a step of
    ``median_s`` seconds over it."""
    gflop = step_gflop(step)
    rate = convolution_gflops(threads)
    floor_s = gflop / rate
    return dict(gflop=gflop, convolution_gflops=rate, floor_s=floor_s, over_floor=median_s / floor_s)
