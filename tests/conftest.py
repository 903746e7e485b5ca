"""Shared test settings: offline W&B, a per-session cache, and the real Omniglot beside the repo."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def omniglot_path() -> Path:
    """The complete Omniglot archives: $MAML_DATA_ROOT, else ``shared/data/omniglot`` beside the repo."""
    if os.environ.get("MAML_DATA_ROOT"):
        return Path(os.environ["MAML_DATA_ROOT"]) / "omniglot"
    return REPO.parent / "shared" / "data" / "omniglot"


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    """W&B offline and quiet; processed datasets cached once per session, outside the home directory."""
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ.setdefault("MAML_CACHE_DIR", str(tmp_path_factory.mktemp("maml-cache")))


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    root = omniglot_path()
    if not (root / "images_background.zip").exists():
        pytest.skip(f"the Omniglot archives are not at {root} (set MAML_DATA_ROOT to their parent)")
    return root
