"""Fixtures of the data tests: the real Omniglot (shared, cached once per session) and tiny image trees."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maml_cli.data import Omniglot, OmniglotConfig

SHARED_OMNIGLOT = Path(__file__).resolve().parents[2] / "../shared/data/omniglot"


def _omniglot_root() -> Path | None:
    env = os.environ.get("MAML_DATA_ROOT")
    for root in ([Path(env) / "omniglot"] if env else []) + [SHARED_OMNIGLOT.resolve()]:
        if all((root / f"{a}.zip").is_file() for a in ("images_background", "images_evaluation")):
            return root
    return None


@pytest.fixture(scope="session")
def omniglot_cfg(tmp_path_factory: pytest.TempPathFactory) -> OmniglotConfig:
    """The real Omniglot, with a session cache (built here once: about 8 s on 2 cores)."""
    root = _omniglot_root()
    if root is None:
        pytest.skip(
            f"real Omniglot absent: put images_background.zip and images_evaluation.zip in {SHARED_OMNIGLOT} "
            "or in $MAML_DATA_ROOT/omniglot"
        )
    cfg = OmniglotConfig(root=str(root), cache_dir=str(tmp_path_factory.mktemp("omniglot-cache")), download=False)
    start = time.perf_counter()
    Omniglot(cfg)
    print(f"\nOmniglot cache built in {time.perf_counter() - start:.1f} s")
    return cfg


@pytest.fixture(scope="session")
def omniglot(omniglot_cfg: OmniglotConfig) -> Omniglot:
    return Omniglot(omniglot_cfg)


def _write_image(path: Path, size: tuple[int, int] = (12, 10), mode: str = "RGB", seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return np.array(image)


@pytest.fixture
def image_file():
    """Writes a random image file: ``(path, size=(width, height), mode="RGB", seed=0)``; returns its pixels."""
    return _write_image


@pytest.fixture
def class_tree():
    """Writes ``{class: image count}`` as ``folder/<class>/<i>.png`` (random RGB, 12x10)."""

    def write(folder: Path, counts: dict[str, int], seed: int = 0) -> Path:
        for c, (name, count) in enumerate(counts.items()):
            for i in range(count):
                _write_image(folder / name / f"{i:02d}.png", seed=seed + 100 * c + i)
        return folder

    return write
