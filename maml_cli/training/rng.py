"""Every random stream a training run depends on, saved in its checkpoints so that a resumed run continues exactly."""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_state(sampler) -> dict:
    """Python's, NumPy's, torch's (CPU and CUDA) and the task sampler's RNG states, as plain data."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "sampler": sampler.state_dict(),
    }


def restore_rng(state: dict, sampler) -> None:
    """Undo :func:`rng_state`: every generator continues exactly where it was saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    sampler.load_state_dict(state["sampler"])
